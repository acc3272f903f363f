"""opsdag.triggers."""

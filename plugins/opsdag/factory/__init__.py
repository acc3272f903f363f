"""opsdag.factory."""

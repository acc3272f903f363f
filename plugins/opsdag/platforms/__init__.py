"""opsdag.platforms."""

"""opsdag.hooks."""

"""opsdag.sandbox."""

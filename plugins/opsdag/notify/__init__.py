"""opsdag.notify."""

"""opsdag.spec."""

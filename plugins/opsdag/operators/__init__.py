"""opsdag.operators."""

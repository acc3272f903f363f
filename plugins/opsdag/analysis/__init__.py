"""opsdag.analysis."""

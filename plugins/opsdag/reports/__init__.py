"""opsdag.reports."""

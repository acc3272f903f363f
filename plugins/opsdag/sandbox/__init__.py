"""The documented command line ``python -m opsdag.sandbox up|down|status [--json]``, nothing else.

This package exists only to keep that command line (README, DESIGN.md) working: the
sandbox itself is dev tooling in :mod:`opsdag.dev.sandbox`, which ``__main__`` delegates to.
"""

"""``python -m opsdag <command>``: see :mod:`opsdag.cli`."""

from opsdag.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

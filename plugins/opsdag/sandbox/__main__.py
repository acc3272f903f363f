"""``python -m opsdag.sandbox up|down|status [--json]``: delegates to ``opsdag.dev.sandbox.cli``."""

from __future__ import annotations

import sys

from opsdag.dev.sandbox.cli import main

if __name__ == "__main__":
    sys.exit(main())

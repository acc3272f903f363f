"""Shared test setup: the opsdag package on sys.path, and the session-wide sandbox fixture."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
os.environ.setdefault("OPSDAG_HOME", str(ROOT))

# ``sandbox``: a running sandbox for the whole session (tests/support/sandbox.py).
from support.sandbox import sandbox  # noqa: E402, F401

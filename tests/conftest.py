"""Shared test setup: the opsdag package on sys.path and a project-local state directory per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
os.environ.setdefault("OPSDAG_HOME", str(ROOT))

"""Where opsdag finds its specs and keeps its state.

Everything is overridable by environment so that tests and several checkouts can run
side by side: ``OPSDAG_HOME`` (the project root, holding include/), ``OPSDAG_STATE_DIR``
(runtime state: sandbox servers, Airflow home, reports, backups).
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def project_root() -> Path:
    return Path(os.environ.get("OPSDAG_HOME", _PACKAGE_ROOT)).resolve()


def include_dir() -> Path:
    return Path(os.environ.get("OPSDAG_INCLUDE_DIR", project_root() / "include")).resolve()


def state_dir() -> Path:
    return Path(os.environ.get("OPSDAG_STATE_DIR", project_root() / ".state")).resolve()


def sandbox_dir() -> Path:
    return Path(os.environ.get("OPSDAG_SANDBOX_DIR", state_dir() / "sandbox")).resolve()


def reports_root() -> Path:
    return Path(os.environ.get("OPSDAG_REPORTS_DIR", state_dir() / "reports")).resolve()


def backups_root() -> Path:
    return Path(os.environ.get("OPSDAG_BACKUPS_DIR", state_dir() / "backups")).resolve()

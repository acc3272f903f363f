"""Preflight decisions: pure functions over the checks a release's preflight recorded."""

from __future__ import annotations

from typing import Any


def preflight_passed(preflight: dict[str, Any] | None) -> bool:
    """Whether preflight ran and every one of its checks passed (its ``preflight`` XCom)."""
    checks = (preflight or {}).get("checks")
    return bool(checks) and all(check.get("ok") for check in checks)

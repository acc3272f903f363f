"""Preflight decisions: pure functions over what preflight read, one check each.

The seeds' checklist before a release: capacity confirmed, dependencies healthy, backup
confirmed, rollback plan ready. Each check is ``{"name", "ok", "detail"}``; the detail
says what was found, with the numbers.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from opsdag.format import duration, number
from opsdag.platforms.base import WorkloadStatus


def check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": bool(ok), "detail": detail}


def preflight_passed(preflight: dict[str, Any] | None) -> bool:
    """Whether preflight ran and every one of its checks passed (its ``preflight`` XCom)."""
    checks = (preflight or {}).get("checks")
    return bool(checks) and all(c.get("ok") for c in checks)


def stable_check(status: WorkloadStatus) -> dict[str, Any]:
    stable = status.stable
    if stable is None:
        return check("stable version healthy", False, "no stable version runs")
    detail = f"stable {stable.image}: {stable.ready_instances} of {stable.instances} instance(s) ready"
    return check("stable version healthy", status.stable_healthy, detail)


def in_flight_check(status: WorkloadStatus, image: str) -> dict[str, Any]:
    """Another release's new version must not be running (a retry of this one may be)."""
    canary = status.canary
    if canary is None or canary.image == image:
        return check("no other release in flight", True, "no other new version runs")
    return check("no other release in flight", False, f"{canary.image} runs beside stable: another release")


def capacity_check(status: WorkloadStatus, needed: int) -> dict[str, Any]:
    """The platform must be able to run ``needed`` instances at once (both versions together)."""
    detail = f"needs {needed} instance(s) at once, the platform runs at most {status.capacity}"
    return check("capacity", needed <= status.capacity, detail)


def dependency_check(name: str, value: float | None, low: float | None, high: float | None) -> dict[str, Any]:
    """A dependency's PromQL value within its bounds; no data is not healthy."""
    bounds = " and ".join(
        text
        for text in (
            f">= {number(low)}" if low is not None else "",
            f"<= {number(high)}" if high is not None else "",
        )
        if text
    )
    if value is None:
        return check(f"dependency {name}", False, f"no data (must be {bounds})")
    ok = (low is None or value >= low) and (high is None or value <= high)
    return check(f"dependency {name}", ok, f"{number(value)} (must be {bounds})")


def backup_check(database: str, newest: datetime | None, now: datetime, max_age: timedelta) -> dict[str, Any]:
    """The database's newest verified backup must be younger than ``max_age``."""
    name = f"backup of {database} confirmed"
    if newest is None:
        return check(name, False, f"{database} has no verified backup")
    age = now - newest
    limit = duration(max_age.total_seconds())
    detail = f"newest verified backup is {duration(age.total_seconds())} old (at most {limit})"
    return check(name, age <= max_age, detail)

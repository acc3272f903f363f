"""Preflight's checklist, the promoted and restored states, and smoke checks, as pure decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from opsdag.analysis import preflight_checks as decide
from opsdag.analysis.rollout_state import promoted_state_problems, restored_state_problems
from opsdag.analysis.smoke_checks import SmokeResult, smoke_problems
from opsdag.platforms.base import RollbackTarget, TrackState, TrafficSplit, WorkloadStatus
from opsdag.spec.service import SmokeCheck

OLD, NEW = "registry.opsdag.local/demo-api:1.0.0", "registry.opsdag.local/demo-api:1.1.0"


def status(stable=(OLD, 2, 2), canary=None, capacity=8) -> WorkloadStatus:
    return WorkloadStatus(
        stable=TrackState(*stable) if stable else None,
        canary=TrackState(*canary) if canary else None,
        capacity=capacity,
    )


def test_preflight_passes_only_when_every_check_ran_and_passed() -> None:
    assert decide.preflight_passed({"checks": [{"ok": True}, {"ok": True}]})
    assert not decide.preflight_passed({"checks": [{"ok": True}, {"ok": False}]})
    assert not decide.preflight_passed({"checks": []})
    assert not decide.preflight_passed(None)


@pytest.mark.parametrize(
    ("st", "ok", "detail"),
    [
        (status(), True, f"stable {OLD}: 2 of 2 instance(s) ready"),
        (status(stable=(OLD, 2, 1)), False, f"stable {OLD}: 1 of 2 instance(s) ready"),
        (status(stable=None), False, "no stable version runs"),
    ],
)
def test_stable_must_be_healthy(st, ok, detail) -> None:
    assert decide.stable_check(st) == {"name": "stable version healthy", "ok": ok, "detail": detail}


def test_another_release_in_flight_refuses_but_a_retry_of_this_one_does_not() -> None:
    other = status(canary=("registry.opsdag.local/demo-api:1.3.0-slow", 2, 2))
    assert decide.in_flight_check(other, NEW)["ok"] is False
    assert "1.3.0-slow runs beside stable" in decide.in_flight_check(other, NEW)["detail"]
    assert decide.in_flight_check(status(canary=(NEW, 2, 0)), NEW)["ok"] is True
    assert decide.in_flight_check(status(), NEW)["ok"] is True


@pytest.mark.parametrize(("needed", "ok"), [(3, True), (8, True), (9, False)])
def test_capacity_for_both_versions_at_once(needed, ok) -> None:
    check = decide.capacity_check(status(capacity=8), needed)
    assert check["ok"] is ok
    assert check["detail"] == f"needs {needed} instance(s) at once, the platform runs at most 8"


@pytest.mark.parametrize(
    ("value", "low", "high", "ok", "detail"),
    [
        (1.0, 1, None, True, "1 (must be >= 1)"),
        (0.0, 1, None, False, "0 (must be >= 1)"),
        (0.5, None, 0.2, False, "0.5 (must be <= 0.2)"),
        (0.2, 0.1, 0.2, True, "0.2 (must be >= 0.1 and <= 0.2)"),
        (None, 1, None, False, "no data (must be >= 1)"),
    ],
)
def test_dependency_within_its_bounds_and_no_data_is_not_healthy(value, low, high, ok, detail) -> None:
    assert decide.dependency_check("db", value, low, high) == {
        "name": "dependency db",
        "ok": ok,
        "detail": detail,
    }


def test_backup_must_be_verified_and_young_enough() -> None:
    now = datetime(2026, 11, 29, 12, tzinfo=UTC)
    young = decide.backup_check("demo-db", now - timedelta(hours=3), now, timedelta(days=1))
    old = decide.backup_check("demo-db", now - timedelta(days=2), now, timedelta(days=1))
    edge = decide.backup_check("demo-db", now - timedelta(days=1), now, timedelta(days=1))
    none = decide.backup_check("demo-db", None, now, timedelta(days=1))
    assert (young["ok"], old["ok"], edge["ok"], none["ok"]) == (True, False, True, False)
    assert old["detail"] == "newest verified backup is 48 h old (at most 24 h)"
    assert none["detail"] == "demo-db has no verified backup"
    assert young["name"] == "backup of demo-db confirmed"


def test_a_promoted_state_has_only_the_new_version_healthy_with_all_traffic() -> None:
    done = status(stable=(NEW, 2, 2))
    assert promoted_state_problems(done, TrafficSplit(stable=100, canary=0), NEW) == []
    assert promoted_state_problems(status(), TrafficSplit(100, 0), NEW) == [f"stable is {OLD}, not {NEW}"]
    assert promoted_state_problems(status(stable=(NEW, 2, 1)), TrafficSplit(100, 0), NEW) == [
        f"stable {NEW}: 1 of 2 instance(s) ready"
    ]
    leftover = status(stable=(NEW, 2, 2), canary=(OLD, 1, 1))
    assert promoted_state_problems(leftover, TrafficSplit(90, 10), NEW) == [
        f"a canary {OLD} still runs",
        "the router still sends 10 % to the canary track",
    ]


def test_a_restored_state_is_the_rollback_target_exactly() -> None:
    target = RollbackTarget(image=OLD, instances=2, canary_weight=0)
    assert restored_state_problems(status(), TrafficSplit(100, 0), target) == []
    assert restored_state_problems(status(stable=(OLD, 1, 1)), TrafficSplit(100, 0), target) == [
        "stable runs 1 instance(s), not 2"
    ]
    assert restored_state_problems(status(stable=(NEW, 2, 2)), TrafficSplit(100, 0), target) == [
        f"stable is {NEW}, not {OLD}"
    ]
    assert restored_state_problems(
        status(canary=(NEW, 2, 2)), TrafficSplit(75, 25, preview=True), target
    ) == [
        f"the new version {NEW} still runs",
        "the router sends 25 % to the canary, not 0 %",
        "the preview route still reaches the new version",
    ]
    assert restored_state_problems(status(stable=(OLD, 2, 1)), TrafficSplit(100, 0), target) == [
        "stable: 1 of 2 instance(s) ready"
    ]


def test_smoke_checks_want_the_expected_status_from_every_instance() -> None:
    checks = [
        SmokeCheck(name="health", path="/healthz"),
        SmokeCheck(name="teapot", path="/x", expect_status=418),
    ]
    results = [
        SmokeResult("health", "http://a/healthz", 200),
        SmokeResult("health", "http://b/healthz", 503),
        SmokeResult("teapot", "http://a/x", 418),
        SmokeResult("teapot", "http://b/x", None, "ConnectError: refused"),
    ]
    assert smoke_problems(checks, results) == [
        "health: http://b/healthz: HTTP 503, expected 200",
        "teapot: http://b/x: no answer (ConnectError: refused)",
    ]
    assert smoke_problems(checks, results[:1] + results[2:3]) == []

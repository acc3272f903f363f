"""One actor per service, the last release a runbook may roll back, and when it calls people."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from opsdag.runbooks.actors import (
    Rival,
    acting,
    conflict,
    release_rivals,
    runbook_rivals,
    runbooks_acting_on,
    services_acted_on,
)
from opsdag.runbooks.engine import escalation_reason
from opsdag.runbooks.last_release import last_promoted, rollback_choice
from opsdag.spec.runbook import RunbookSpec


def runbook(name: str, *steps: dict) -> RunbookSpec:
    return RunbookSpec.model_validate({"name": name, "alerts": ["A"], "steps": list(steps)})


ROLLBACK = {"action": "rollback_release", "service": "demo-api", "max_age": "1h"}
RESTART = {"action": "restart_instances", "service": "demo-api"}
CHECK = {"action": "check_metric", "query": "up", "above": 0}
TERMINATE = {"action": "terminate_idle_connections", "database": "demo-db", "older_than": "1m"}
HIGH = runbook("high-error-rate", CHECK, ROLLBACK)
DOWN = runbook("service-down", CHECK, RESTART)
DB = runbook("db-connections", {"action": "pg_connections", "database": "demo-db"}, TERMINATE)
WATCH = runbook("watch", CHECK, {"action": "notify", "message": "x"})
ALL = [HIGH, DOWN, DB, WATCH]


def test_the_services_a_runbook_acts_on_come_from_its_destructive_steps() -> None:
    assert services_acted_on(HIGH) == ["demo-api"]
    assert services_acted_on(DB) == ["demo-db"]
    assert services_acted_on(WATCH) == []
    assert runbooks_acting_on("demo-api", ALL) == ["runbook__high-error-rate", "runbook__service-down"]
    assert runbooks_acting_on("demo-api", ALL, besides="service-down") == ["runbook__high-error-rate"]


def test_a_runbook_must_not_act_beside_the_release_queued_or_running_nor_another_runbook_running() -> None:
    assert runbook_rivals("demo-api", "service-down", ALL) == [
        Rival("release__demo-api", ("queued", "running")),
        Rival("runbook__high-error-rate", ("running",)),
    ]
    assert release_rivals("demo-api", ALL) == [
        Rival("runbook__high-error-rate", ("running",)),
        Rival("runbook__service-down", ("running",)),
    ]
    assert release_rivals("checkout", ALL) == []


@pytest.mark.parametrize(
    ("runs", "expected"),
    [
        ({}, None),
        ({"release__demo-api": 0}, None),
        (
            {"release__demo-api": 1},
            "release__demo-api (1 run in flight) is acting on demo-api; one actor per service",
        ),
        (
            {"release__demo-api": 2, "runbook__high-error-rate": 1},
            "release__demo-api (2 runs in flight), runbook__high-error-rate (1 run in flight) "
            "are acting on demo-api; one actor per service",
        ),
    ],
)
def test_the_verdict_names_who_acts(runs: dict[str, int], expected: str | None) -> None:
    asked = []

    def count(dag_id: str, states: list[str]) -> int:
        asked.append((dag_id, states))
        return runs.get(dag_id, 0)

    active = acting(runbook_rivals("demo-api", "service-down", ALL), count)
    assert conflict("demo-api", active) == expected
    assert asked == [("release__demo-api", ["queued", "running"]), ("runbook__high-error-rate", ["running"])]


NOW = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)


def report(run_id: str, minutes_ago: float, status: str = "promoted", **extra) -> dict:
    return {
        "run_id": run_id,
        "status": status,
        "image": f"repo/demo-api:{run_id}",
        "previous_image": "repo/demo-api:1.0.0",
        "finished_at": (NOW - timedelta(minutes=minutes_ago)).isoformat(),
        **extra,
    }


def test_the_last_release_is_the_newest_promoted_one() -> None:
    reports = [
        report("a", 50),
        report("b", 10),
        report("c", 1, status="rolled_back"),
        report("d", 0.5, dry_run=True),
        report("e", 0, finished_at=None),
    ]
    assert last_promoted(reports).run_id == "b"
    assert last_promoted([report("x", 1, status="failed")]) is None


def test_a_recent_release_still_serving_is_rolled_back_to_its_previous_version() -> None:
    release = last_promoted([report("b", 10)])
    choice = rollback_choice(release, now=NOW, max_age=timedelta(hours=1), stable_image="repo/demo-api:b")
    assert choice.release is release
    assert choice.reason == (
        "repo/demo-api:b was promoted 10 min ago (b, less than 1 h): back to repo/demo-api:1.0.0"
    )


@pytest.mark.parametrize(
    ("reports", "stable", "reason"),
    [
        ([], "repo/demo-api:b", "no recent release to roll back: no promoted release in the reports"),
        (
            [report("b", 90)],
            "repo/demo-api:b",
            "no recent release to roll back: the last one (repo/demo-api:b, b) was promoted 1 h 30 min ago, "
            "more than 1 h",
        ),
        (
            [report("b", 10)],
            "repo/demo-api:z",
            "no recent release to roll back: the platform serves repo/demo-api:z, not the last release's "
            "repo/demo-api:b (changed since b)",
        ),
        (
            [report("b", 10, previous_image=None)],
            "repo/demo-api:b",
            "no recent release to roll back: b recorded no previous version",
        ),
    ],
)
def test_nothing_is_rolled_back_when_the_last_release_is_old_absent_or_replaced(
    reports, stable, reason
) -> None:
    choice = rollback_choice(last_promoted(reports), now=NOW, max_age=timedelta(hours=1), stable_image=stable)
    assert (choice.release, choice.reason) == (None, reason)


def record(step: str, result: str, kind: str = "mitigate", **data) -> dict:
    return {"step": step, "result": result, "kind": kind, "detail": f"{step} said so", "data": data}


@pytest.mark.parametrize(
    ("records", "reason"),
    [
        (
            [
                record("confirm", "done", "assess"),
                record("restart", "done"),
                record("verify", "done", "verify"),
            ],
            None,
        ),
        ([record("confirm", "done", "assess"), None, None], None),  # the alert no longer held
        ([record("restart", "skipped", escalate=True), None], "restart: restart said so"),
        ([record("restart", "failed"), None], "restart failed: restart said so"),
        (
            [record("restart", "done"), record("verify", "failed", "verify")],
            "verify failed: verify said so",
        ),
        ([record("restart", "planned"), record("verify", "planned", "verify")], None),
    ],
)
def test_people_are_called_when_the_runbook_did_not_restore_the_service(records, reason) -> None:
    assert escalation_reason(records) == reason


def test_the_diagnostics_list_the_newest_releases_first_with_their_age_and_change() -> None:
    from opsdag.runbooks.last_release import recent_releases, releases_detail

    reports = [report("a", 50), report("b", 10, status="rolled_back"), report("c", 0.5, dry_run=True)]
    rows = recent_releases(reports, 3)
    assert [r["run_id"] for r in rows] == ["b", "a"]
    assert releases_detail(rows, now=NOW) == (
        "last releases: b rolled_back 10 min ago (1.0.0 -> b); a promoted 50 min ago (1.0.0 -> a)"
    )
    assert releases_detail([], now=NOW) == "no release in the reports"
    assert recent_releases(reports, 1) == rows[:1]


def test_a_platform_that_cannot_restart_or_read_logs_says_so_naming_itself() -> None:
    from opsdag.platforms.base import PlatformError, WorkloadDriver

    class Bare(WorkloadDriver):
        kind = "bare"

    Bare.__abstractmethods__ = frozenset()  # only the defaults are under test
    with pytest.raises(
        PlatformError, match=r"^the 'bare' platform cannot restart instances \(WorkloadDriver"
    ):
        Bare().restart("stable")
    with pytest.raises(PlatformError, match=r"^the 'bare' platform cannot read instance logs"):
        Bare().logs("stable", 5)

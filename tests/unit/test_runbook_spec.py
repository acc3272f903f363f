"""The runbook spec: the actions the runbook DAG performs, their arguments, and what it refuses."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from opsdag.spec.loader import parse_spec
from opsdag.spec.runbook import NOT_PERFORMED, RunbookSpec

INCLUDE = Path(__file__).resolve().parents[2] / "include"


def spec(*steps: dict, **extra) -> RunbookSpec:
    return RunbookSpec.model_validate(
        {"name": "db", "alerts": ["DatabaseConnectionsExhausted"], "steps": list(steps), **extra}
    )


def problems(*steps: dict, **extra) -> list[tuple[str, str]]:
    """``(field, problem)`` as ``opsdag validate`` prints them."""
    data = {"name": "db", "alerts": ["DatabaseConnectionsExhausted"], "steps": list(steps), **extra}
    loaded, errors = parse_spec(RunbookSpec, data, "db.yaml")
    assert loaded is None
    return [(e.field, e.problem) for e in errors]


TERMINATE = {"action": "terminate_idle_connections", "database": "demo-db", "older_than": "10m"}


def test_the_shipped_runbooks_load() -> None:
    for path in sorted((INCLUDE / "runbooks").glob("*.yaml")):
        RunbookSpec.model_validate(yaml.safe_load(path.read_text()))


def test_db_connections_runbook_diagnoses_terminates_verifies_and_tells() -> None:
    runbook = RunbookSpec.model_validate(
        yaml.safe_load((INCLUDE / "runbooks" / "db-connections.yaml").read_text())
    )
    assert [str(a) for a in runbook.alerts] == ['DatabaseConnectionsExhausted{service="demo-db"}']
    assert runbook.matches_alert("DatabaseConnectionsExhausted", {"service": "demo-db"})
    assert not runbook.matches_alert("DatabaseConnectionsExhausted", {"service": "orders-db"})
    assert [
        (p["step"], p["kind"], p["destructive"], p["needs_approval"]) for p in runbook.plan(dry_run=True)
    ] == [
        ("diagnose-connections", "diagnostics", False, False),
        ("terminate-idle", "mitigate", True, True),
        ("verify-connections", "verify", False, False),
        ("tell-owners", "escalate", False, False),
    ]
    terminate, verify = runbook.steps[1], runbook.steps[2]
    assert terminate.older_than == timedelta(minutes=10) and terminate.user is None
    assert (verify.check, verify.below, verify.wait_for) == ("verify", 0.8, timedelta(minutes=3))
    assert runbook.guards.dry_run is True  # an alert's run only plans unless someone says otherwise


def test_step_ids_are_names_or_position_and_action() -> None:
    runbook = spec({"action": "pg_connections", "connection_id": "pg"}, {**TERMINATE, "name": "end-idle"})
    assert runbook.step_ids() == ["1-pg_connections", "end-idle"]


def test_a_database_step_names_exactly_one_server() -> None:
    expected = "name the server with exactly one of database (a database spec) or connection_id"
    both = problems({**TERMINATE, "connection_id": "postgres_demo"})
    neither = problems({"action": "pg_connections"})
    assert both == [("steps[0]", expected)]
    assert neither == [("steps[0]", expected)]


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"older_than": "soon"}, "older_than", "is not a duration"),
        ({"older_than": "0s"}, "older_than", "must be a positive duration"),
        ({"user": ""}, "user", "must not be empty"),
        ({"idle_in_transaction": "sometimes"}, "idle_in_transaction", "must be true or false"),
        ({"database": "Demo_DB"}, "database", "is not a DNS-1123 name"),
        ({"replicas": 3}, "replicas", "unknown key; allowed here: name, database, connection_id, action"),
    ],
)
def test_terminate_arguments_are_checked_by_name(change: dict, field: str, fragment: str) -> None:
    [(where, message)] = problems({**TERMINATE, **change})
    assert where == f"steps[0].{field}"
    assert fragment in message


def test_a_verify_check_waits_and_an_assess_check_does_not() -> None:
    verify = spec({"action": "check_metric", "query": "x", "below": 0.8, "check": "verify", "timeout": "90s"})
    assert verify.steps[0].wait_for == timedelta(seconds=90) and verify.steps[0].step_kind == "verify"
    assert spec({"action": "check_metric", "query": "x", "below": 1, "check": "verify"}).steps[
        0
    ].wait_for == timedelta(minutes=5)
    [(where, message)] = problems({"action": "check_metric", "query": "x", "above": 1, "timeout": "1m"})
    assert (where, "only a verify check waits" in message) == ("steps[0].timeout", True)
    [(where, message)] = problems({"action": "check_metric", "query": "x", "check": "verify"})
    assert (where, "above, below or both" in message) == ("steps[0]", True)


def test_an_action_the_dag_cannot_perform_is_refused_naming_the_step(monkeypatch) -> None:
    """Every action of the catalogue is performed now; one that is not would be refused, not ignored."""
    import opsdag.spec.runbook as runbook_spec

    assert NOT_PERFORMED == ()  # every action of the catalogue has its operator
    monkeypatch.setattr(runbook_spec, "NOT_PERFORMED", ("scale",))
    [(where, message)] = problems(
        {"action": "notify", "message": "hi"}, {"action": "scale", "service": "demo-api", "replicas": 2}
    )
    assert where == "steps[1].action"
    assert message == (
        "step '2-scale': scale is not performed by the runbook DAG yet; remove the step (supported: "
        "check_metric, notify, escalate, service_status, metric_snapshot, assess, pg_connections, "
        "terminate_idle_connections, rollback_release, restart_instances, drain_canary, health_gate, wait)"
    )


def test_scale_sets_the_stable_instances_never_below_one() -> None:
    [step] = spec({"action": "scale", "service": "demo-api", "replicas": 3}).steps
    assert (step.replicas, step.timeout, step.destructive, step.step_kind) == (
        3,
        timedelta(seconds=60),
        True,
        "mitigate",
    )
    [(where, message)] = problems({"action": "scale", "service": "demo-api", "replicas": 0})
    assert (where, message) == ("steps[0].replicas", "must be at least 1, not 0")


def test_step_ids_must_be_unique_also_when_derived() -> None:
    [(where, message)] = problems(
        {"action": "wait", "duration": "1s"}, {"action": "wait", "duration": "2s", "name": "1-wait"}
    )
    assert where == "steps[1].name" and "'1-wait' is repeated" in message


def test_notifications_and_approval_timeout() -> None:
    runbook = spec(
        TERMINATE, notifications={"slack": {"channel": "#incidents"}}, guards={"approval_timeout": "5m"}
    )
    assert runbook.notifications.slack.connection_id == "slack_default"
    assert runbook.guards.approval_timeout == timedelta(minutes=5)


def test_service_steps_rollback_restart_and_escalate() -> None:
    runbook = spec(
        {"action": "rollback_release", "service": "demo-api", "max_age": "2h"},
        {"action": "restart_instances", "service": "demo-api"},
        {"action": "escalate", "message": "take over", "mentions": ["<!here>"]},
    )
    rollback, restart, escalate = runbook.steps
    assert (rollback.max_age, rollback.ready_timeout) == (timedelta(hours=2), timedelta(seconds=60))
    assert (rollback.destructive, rollback.step_kind) == (True, "mitigate")
    assert (restart.track, restart.timeout, restart.destructive) == ("stable", timedelta(seconds=60), True)
    assert (escalate.step_kind, escalate.destructive, escalate.options) == (
        "escalate",
        False,
        ["Acknowledged", "Taking over"],
    )
    [(where, message)] = problems({"action": "rollback_release", "service": "demo-api"})
    assert (where, message) == ("steps[0].max_age", "required but missing")
    [(where, _)] = problems({"action": "restart_instances", "service": "demo-api", "track": "canary"})
    assert where == "steps[0].track"


def test_high_error_rate_and_service_down_runbooks() -> None:
    high = RunbookSpec.model_validate(
        yaml.safe_load((INCLUDE / "runbooks" / "high-error-rate.yaml").read_text())
    )
    assert [str(a) for a in high.alerts] == ['HighErrorRate{service="demo-api"}']
    assert [s.action for s in high.steps] == [
        "service_status",
        "metric_snapshot",
        "check_metric",
        "assess",
        "rollback_release",
        "check_metric",
        "notify",
        "escalate",
    ]
    assert high.steps[4].max_age == timedelta(hours=2)
    assess = high.steps[3]
    assert (set(assess.queries), [t.level for t in assess.severity], assess.otherwise) == (
        {"error-share", "down-share"},
        ["critical", "major"],
        "minor",
    )
    down = RunbookSpec.model_validate(
        yaml.safe_load((INCLUDE / "runbooks" / "service-down.yaml").read_text())
    )
    assert [str(a) for a in down.alerts] == ['ServiceDown{service="demo-api"}']
    assert [s.action for s in down.steps] == [
        "service_status",
        "metric_snapshot",
        "check_metric",
        "restart_instances",
        "check_metric",
        "escalate",
    ]

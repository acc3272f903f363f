"""The runbook engine's decisions, without Airflow: guards, metric verdicts, the incident record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from opsdag.runbooks.engine import (
    action_record,
    approval_decision,
    failed_steps,
    incident_record,
    metric_verdict,
)
from opsdag.runbooks.pg_steps import UnknownDatabase, server_of
from opsdag.runbooks.postmortem import postmortem_figures, render_postmortem
from opsdag.spec.runbook import RunbookSpec

INCLUDE = Path(__file__).resolve().parents[2] / "include"
START = datetime(2026, 11, 30, 5, 0, tzinfo=UTC)
ALERT = {
    "name": "DatabaseConnectionsExhausted",
    "status": "firing",
    "labels": {"alertname": "DatabaseConnectionsExhausted", "service": "demo-db"},
    "startsAt": START.isoformat(),
    "fingerprint": "00c0ffee",
}


@pytest.fixture
def runbook() -> RunbookSpec:
    return RunbookSpec.model_validate(
        yaml.safe_load((INCLUDE / "runbooks" / "db-connections.yaml").read_text())
    )


def answer(option: str, user: str = "alice") -> dict:
    return {"chosen_options": [option], "params_input": {}, "responded_by_user": {"id": user, "name": user}}


# fmt: off
DECISIONS = [
    (True, True, None, "plan", "dry run: planned only"),
    (True, True, answer("Approve"), "plan", "dry run"),          # a dry run never acts
    (False, False, None, "act", "guards.approval_for_destructive is off"),
    (False, True, answer("Approve"), "act", "approved by alice"),
    (False, True, answer("Reject", "bob"), "skip", "rejected by bob (Reject): nothing changed"),
    (False, True, None, "skip", "no answer from the approval"),
    (False, True, {"chosen_options": ["Reject"], "responded_by_user": None}, "skip", "rejected by timeout"),
]
VERDICTS = [
    (0.86, None, 0.8, False, "0.86 is not below 0.8"),
    (0.05, None, 0.8, True, "0.05 < 0.8"),
    (0.8, None, 0.8, False, "0.8 is not below 0.8"),     # at the bound is not within it
    (3, 0, None, True, "3 > 0"),
    (0, 0, None, False, "0 is not above 0"),
    (5, 1, 4, False, "5 is not below 4"),
    (2, 1, 4, True, "2 > 1 and < 4"),
    (None, None, 0.8, False, "no data"),
]
# fmt: on


@pytest.mark.parametrize(("dry_run", "needs", "given", "mode", "fragment"), DECISIONS)
def test_a_destructive_step_acts_only_outside_a_dry_run_and_once_approved(
    dry_run, needs, given, mode, fragment
):
    decision = approval_decision(dry_run=dry_run, needs_approval=needs, answer=given)
    assert decision.mode == mode
    assert fragment in decision.reason
    assert decision.approved_by == ("alice" if mode == "act" and needs else None)


@pytest.mark.parametrize(("value", "above", "below", "ok", "reason"), VERDICTS)
def test_metric_verdicts_name_the_value_and_the_bound(value, above, below, ok, reason):
    assert metric_verdict(value, above=above, below=below) == (ok, reason)


def records(runbook: RunbookSpec, **by_step) -> dict:
    """Records as the steps push them, ``by_step[step] = (result, minutes from start, detail, extra)``."""
    out = {}
    for i, sid in enumerate(runbook.step_ids()):
        if sid not in by_step:
            continue
        result, minute, detail, extra = by_step[sid]
        began = START + timedelta(minutes=minute)
        out[sid] = action_record(
            runbook.steps[i],
            sid,
            result=result,
            started_at=began,
            ended_at=began + timedelta(seconds=5),
            detail=detail,
            **extra,
        )
    return out


def test_a_rejected_approval_skips_the_termination_and_the_postmortem_says_so(runbook: RunbookSpec) -> None:
    decision = approval_decision(dry_run=False, needs_approval=True, answer=answer("Reject", "bob"))
    pushed = records(
        runbook,
        **{
            "diagnose-connections": ("done", 1, "88 of 100 connections in use", {}),
            "terminate-idle": ("skipped", 2, decision.reason, {"needs_approval": True}),
            "verify-connections": ("failed", 3, "not recovered within 3m: 0.88 is not below 0.8", {}),
            "tell-owners": ("done", 6, "sent to Slack", {}),
        },
    )
    record = incident_record(
        runbook,
        run_id="alert__00c0ffee__x",
        conf_alert=ALERT,
        dry_run=False,
        records=pushed,
        run_started=START,
    )
    terminate = record.actions[1]
    assert (terminate.result, terminate.approval, terminate.destructive) == ("skipped", "not approved", True)
    assert "rejected by bob" in terminate.detail
    assert record.verify is not None and record.verify.recovered is False
    assert failed_steps(record) == ["verify-connections"]
    figures = postmortem_figures(record)
    assert figures.mitigated_by is None and figures.changed == []
    markdown = render_postmortem(record)
    assert "| terminate-idle | mitigate | terminate_idle_connections | skipped |" in markdown
    assert "rejected by bob (Reject): nothing changed" in markdown
    assert "Not recovered: not recovered within 3m" in markdown


def test_a_verified_recovery_gives_time_to_mitigate_and_mttr(runbook: RunbookSpec) -> None:
    verification = {
        "recovered": True,
        "at": (START + timedelta(minutes=3)).isoformat(),
        "detail": "0.05 < 0.8",
    }
    pushed = records(
        runbook,
        **{
            "diagnose-connections": ("done", 1, "88 of 100", {}),
            "terminate-idle": ("done", 2, "terminated 82", {"approved_by": "alice", "needs_approval": True}),
            "verify-connections": ("done", 2.5, "recovered", {"data": {"verification": verification}}),
            "tell-owners": ("done", 3, "sent", {"data": {"escalated_to": "Slack #incidents"}}),
        },
    )
    record = incident_record(
        runbook, run_id="r", conf_alert=ALERT, dry_run=False, records=pushed, run_started=START
    )
    figures = postmortem_figures(record)
    assert record.actions[1].approval == "approved by alice"
    [escalation] = record.escalations
    assert (escalation.to, escalation.at) == ("Slack #incidents", START + timedelta(minutes=3, seconds=5))
    assert escalation.reason.startswith("Connections of demo-db were above 80 %")
    assert (figures.mitigated_by, figures.time_to_mitigate, figures.mttr) == (
        "terminate-idle",
        "2 min 5 s",
        "3 min",
    )


def test_steps_without_a_record_say_why_from_their_task_state(runbook: RunbookSpec) -> None:
    pushed = records(runbook, **{"diagnose-connections": ("done", 1, "ok", {})})
    states = {
        "terminate-idle": "failed",
        "verify-connections": "upstream_failed",
        "tell-owners": "upstream_failed",
    }
    record = incident_record(
        runbook, run_id="r", conf_alert=ALERT, dry_run=False, records=pushed, run_started=START, states=states
    )
    assert [(a.step, a.result) for a in record.actions] == [
        ("diagnose-connections", "done"),
        ("terminate-idle", "failed"),
        ("verify-connections", "skipped"),
        ("tell-owners", "skipped"),
    ]
    assert "failed before it could record" in record.actions[1].detail
    assert record.verify is None  # the verify step never ran: nothing was verified


def test_a_failed_approval_task_is_why_the_destructive_step_did_not_run(runbook: RunbookSpec) -> None:
    states = {"approve_terminate-idle": "failed", "terminate-idle": "upstream_failed"}
    record = incident_record(
        runbook, run_id="r", conf_alert=ALERT, dry_run=False, records={}, run_started=START, states=states
    )
    terminate = record.actions[1]
    assert (terminate.result, terminate.approval) == ("skipped", "not approved")
    assert terminate.detail == "not run: its approval task failed (see its log); nothing was changed"


def test_a_manual_run_without_an_alert_is_named_so(runbook: RunbookSpec) -> None:
    record = incident_record(
        runbook, run_id="manual__1", conf_alert={}, dry_run=True, records={}, run_started=START
    )
    assert (record.alert.name, record.alert.startsAt) == ("manual run (no alert)", START)


def test_database_steps_resolve_their_server_through_the_database_spec(runbook: RunbookSpec) -> None:
    assert server_of(runbook.steps[0], INCLUDE) == ("postgres_demo", "demo")
    other = runbook.steps[0].model_copy(update={"database": "orders-db"})
    expected = "no database spec 'orders-db' in include/databases/ \\(known: demo-db\\)"
    with pytest.raises(UnknownDatabase, match=expected):
        server_of(other, INCLUDE)
    direct = runbook.steps[0].model_copy(update={"database": None, "connection_id": "pg_orders"})
    assert server_of(direct, INCLUDE) == ("pg_orders", None)

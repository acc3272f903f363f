"""The postmortem of an incident run: its figures, its Markdown (from a replaceable template) and
its JSON, written as the run's report."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from opsdag.alerts.payload import Alert
from opsdag.reports.store import report_paths
from opsdag.runbooks.postmortem import (
    FOLLOW_UPS_PLACEHOLDER,
    FORMAT,
    ROOT_CAUSE_PLACEHOLDER,
    PostmortemTemplateError,
    postmortem_data,
    postmortem_figures,
    render_postmortem,
    write_postmortem,
)
from opsdag.runbooks.postmortem_record import IncidentRecord

START = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)


def at(minutes: float) -> str:
    """The time ``minutes`` after the alert started firing."""
    return (START + timedelta(minutes=minutes)).isoformat()


def action(step, kind, result, start=None, end=None, **kw) -> dict:
    times = {
        "started_at": at(start) if start is not None else None,
        "ended_at": at(end) if end is not None else None,
    }
    return {"step": step, "action": kw.pop("action", step), "kind": kind, "result": result, **times, **kw}


ALERT = {
    "name": "DatabaseConnectionsExhausted",
    "status": "firing",
    "labels": {"alertname": "DatabaseConnectionsExhausted", "database": "demo-db", "severity": "critical"},
    "annotations": {"summary": "95 % of max_connections in use"},
    "startsAt": START.isoformat(),
    "fingerprint": "0123abcd",
}

ACTIONS = [
    action("count_connections", "diagnostics", "done", 1, 1.1, detail="48 of 50 connections in use"),
    action("kill_queries", "mitigate", "failed", 2, 2.5, destructive=True, detail="permission denied"),
    action(
        "terminate_idle",
        "mitigate",
        "done",
        3,
        3.5,
        action="terminate_idle_connections",
        destructive=True,
        needs_approval=True,
        approved_by="alice",
        detail="terminated 30 idle connection(s); spared 1, gone 0, failed 0",
    ),
    action("scale_pool", "mitigate", "done", 4, 6, destructive=True),
    action("page_dba", "escalate", "skipped"),
]


def record(**changes) -> IncidentRecord:
    data = {
        "runbook": "pg-connections-exhausted",
        "run_id": "alert__0123abcd__2026-11-30T04:00:00+00:00",
        "alert": ALERT,
        "dry_run": False,
        "actions": ACTIONS,
        "verify": {"recovered": True, "at": at(9), "detail": "12 of 50 connections in use"},
        "escalations": [{"at": at(2.6), "to": "db-oncall", "reason": "the first mitigation failed"}],
    }
    return IncidentRecord.model_validate(data | changes)


# -- the figures ------------------------------------------------------------------------------


def test_time_to_mitigate_ends_with_the_first_mitigation_that_was_done_and_mttr_with_recovery():
    figures = postmortem_figures(record())
    assert figures.mitigated_by == "terminate_idle"  # the failed one before it does not count
    assert figures.time_to_mitigate_seconds == 3.5 * 60
    assert figures.mttr_seconds == 9 * 60
    assert (figures.time_to_mitigate, figures.mttr) == ("3 min 30 s", "9 min")
    assert figures.changed == ["terminate_idle", "scale_pool"]
    assert figures.results == {"done": 3, "failed": 1, "skipped": 1, "planned": 0}
    assert figures.summary == (
        "DatabaseConnectionsExhausted (pg-connections-exhausted): recovered after 9 min, "
        "mitigated by terminate_idle after 3 min 30 s; escalated to db-oncall"
    )


@pytest.mark.parametrize(
    "verify",
    [{"recovered": False, "at": at(20), "detail": "still 50 of 50"}, {"recovered": False}, None],
    ids=["verified not recovered", "not recovered without a time", "never verified"],
)
def test_without_a_verified_recovery_there_is_no_mttr(verify):
    figures = postmortem_figures(record(verify=verify))
    assert (figures.recovered, figures.mttr_seconds, figures.mttr) == (False, None, "not recovered")
    assert figures.time_to_mitigate_seconds == 3.5 * 60  # mitigated, yet not recovered
    assert figures.summary == (
        "DatabaseConnectionsExhausted (pg-connections-exhausted): not recovered; kill_queries failed; "
        "escalated to db-oncall"
    )


def test_nothing_mitigated_reads_not_mitigated():
    figures = postmortem_figures(record(actions=ACTIONS[:2], verify={"recovered": False}))
    assert (figures.mitigated_by, figures.time_to_mitigate_seconds) == (None, None)
    assert figures.time_to_mitigate == "not mitigated"


def test_a_dry_run_says_nothing_was_changed_and_mitigates_nothing():
    planned = [action("count_connections", "diagnostics", "done", 1, 1.1)] + [
        action(step, "mitigate", "planned", destructive=True) for step in ("terminate_idle", "scale_pool")
    ]
    dry = record(dry_run=True, actions=planned, verify={"recovered": False}, escalations=[])
    figures = postmortem_figures(dry)
    assert figures.summary == (
        "DatabaseConnectionsExhausted (pg-connections-exhausted): dry run, nothing was changed; "
        "2 step(s) planned"
    )
    assert (figures.changed, figures.time_to_mitigate_seconds, figures.problems) == ([], None, [])
    assert "> Dry run: nothing was changed." in render_postmortem(dry)


def test_a_dry_run_that_records_a_change_does_not_claim_nothing_changed():
    figures = postmortem_figures(record(dry_run=True))
    assert figures.time_to_mitigate_seconds is None
    assert "nothing was changed" not in figures.summary
    assert figures.problems == [
        "a dry run changes nothing, yet terminate_idle, scale_pool were recorded as done"
    ]


def test_the_record_takes_the_runbook_run_conf_alert_as_the_alert_endpoint_sends_it():
    conf = Alert.model_validate({**ALERT, "status": "firing"}).to_conf()
    rec = record(alert=conf)
    assert rec.alert.name == "DatabaseConnectionsExhausted" and rec.alert.startsAt == START
    unnamed = record(alert={k: v for k, v in ALERT.items() if k != "name"})
    assert unnamed.alert.name == "DatabaseConnectionsExhausted"  # from labels.alertname
    assert rec.dag_id == "runbook__pg-connections-exhausted"


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"alert": {**ALERT, "startsAt": "2026-11-30T04:00:00"}}, "needs its zone"),
        ({"verify": {"recovered": True}}, "needs the time it was seen"),
        ({"actions": [action("x", "repair", "done")]}, "kind"),
        ({"actions": [action("x", "mitigate", "succeeded")]}, "result"),
    ],
)
def test_a_record_that_cannot_be_reported_is_refused(changes, problem):
    with pytest.raises(ValidationError, match=problem):
        record(**changes)


# -- the Markdown -----------------------------------------------------------------------------


def test_the_markdown_has_the_timeline_in_order_every_action_and_the_placeholders():
    md = render_postmortem(record(alert={**ALERT, "status": "resolved", "endsAt": at(10)}))
    timeline = md.split("## Timeline")[1].split("## Actions")[0]
    events = [
        "alert DatabaseConnectionsExhausted started firing",
        "count_connections (diagnostics, count_connections): done after 6.0 s: 48 of 50",
        "kill_queries (mitigate, kill_queries): failed after 30 s: permission denied",
        "escalated to db-oncall: the first mitigation failed",
        "terminate_idle (mitigate, terminate_idle_connections): done after 30 s",
        "scale_pool (mitigate, scale_pool): done after 2 min",
        "recovery verified: 12 of 50 connections in use",
        "alert DatabaseConnectionsExhausted resolved",
    ]
    positions = [timeline.find(event) for event in events]
    assert -1 not in positions and positions == sorted(positions), positions
    assert "| 2026-11-30 04:03:00 UTC | 3 min |" in timeline
    actions = md.split("## Actions")[1].split("## Verification")[0]
    assert (
        "| terminate_idle | mitigate | terminate_idle_connections | done | 30 s | yes | approved by alice |"
        in actions
    )
    assert "| page_dba | escalate | page_dba | skipped | - | no | not needed | - |" in actions
    assert "| time to mitigate | 3 min 30 s (by terminate_idle) |" in md
    assert "| MTTR | 9 min |" in md
    assert "| severity | critical |" in md and "| database | demo-db |" in md
    assert f"## Root cause\n\n{ROOT_CAUSE_PLACEHOLDER}\n" in md
    assert f"## Follow-ups\n\n- [ ] {FOLLOW_UPS_PLACEHOLDER}\n" in md


def test_user_text_cannot_break_a_table_row():
    md = render_postmortem(record(alert={**ALERT, "labels": {**ALERT["labels"], "pod": "a|b\nc"}}))
    assert "| pod | a\\|b c |" in md


def test_a_replaced_template_is_used(tmp_path: Path):
    template = tmp_path / "ours.md.j2"
    template.write_text(
        "{{ alert.labels.database }}: {{ figures.mttr }}; {{ record.actions | length }} actions\n"
    )
    assert render_postmortem(record(), template=template) == "demo-db: 9 min; 5 actions\n"


def test_a_missing_template_is_named(tmp_path: Path):
    missing = tmp_path / "nowhere" / "postmortem.md.j2"
    with pytest.raises(PostmortemTemplateError, match=f"^{missing}: no such postmortem template"):
        render_postmortem(record(), template=missing)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("line one\n{% if %}\n", r":2: .*"),
        ("{{ figures.no_such_figure }}\n", r": .*no_such_figure"),
        ("{% include 'other.j2' %}\n", r": .*other\.j2"),
    ],
    ids=["syntax error", "undefined name", "missing include"],
)
def test_an_invalid_template_is_named_with_its_problem(tmp_path: Path, text, problem):
    template = tmp_path / "bad.md.j2"
    template.write_text(text)
    with pytest.raises(PostmortemTemplateError, match=f"^{template}{problem}"):
        render_postmortem(record(), template=template)


# -- the JSON and the files -------------------------------------------------------------------


def test_the_json_has_stable_keys_and_round_trips():
    rec = record()
    data = json.loads(json.dumps(postmortem_data(rec)))
    assert list(data) == [
        "format",
        "summary",
        "runbook",
        "run_id",
        "dag_id",
        "alert",
        "dry_run",
        "actions",
        "verify",
        "escalations",
        "figures",
        "timeline",
    ]
    assert data["format"] == FORMAT == "opsdag.incident-report/1"
    assert data["figures"]["time_to_mitigate_seconds"] == 210 and data["figures"]["mttr_seconds"] == 540
    assert data["timeline"][0] == {
        "at": "2026-11-30T04:00:00+00:00",
        "since_start_seconds": 0.0,
        "event": "alert DatabaseConnectionsExhausted started firing",
    }
    assert IncidentRecord.from_data(data) == rec


def test_the_postmortem_is_written_as_the_runs_report(tmp_path: Path):
    rec = record()
    paths = write_postmortem(rec, tmp_path)
    assert paths == report_paths("runbook__pg-connections-exhausted", rec.run_id, tmp_path)
    assert json.loads(paths.json.read_text())["summary"] == postmortem_figures(rec).summary
    assert paths.markdown.read_text() == render_postmortem(rec)

    bad = tmp_path / "bad.md.j2"
    bad.write_text("{% if %}")
    before = (paths.json.read_bytes(), paths.markdown.read_bytes())
    with pytest.raises(PostmortemTemplateError):
        write_postmortem(record(verify=None), tmp_path, template=bad)
    assert (paths.json.read_bytes(), paths.markdown.read_bytes()) == before  # the old report stays whole

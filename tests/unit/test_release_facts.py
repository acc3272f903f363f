"""From what a release run's tasks recorded to the report: the decisions, and that they tell the truth.

Each test gives the report task's inputs (XComs, task states, the first failing step) as
a real run would leave them, and reads what a person is told: summary, rollback reason,
incidents, next actions, and the Markdown and Slack text.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from opsdag.analysis.monitoring import monitoring_queries, monitoring_window_s
from opsdag.analysis.summary import MetricSummary
from opsdag.notify.release_messages import release_outcome, release_started, slack_text
from opsdag.paths import include_dir
from opsdag.reports.release_facts import ReleaseFacts, build_record, release_status
from opsdag.reports.release_files import report_data
from opsdag.reports.release_markdown import markdown_text, note_markdown, render_markdown
from opsdag.reports.release_record import ReleaseRecord
from opsdag.reports.release_wording import cause, next_actions, summary
from opsdag.spec.service import ServiceSpec
from opsdag.strategies.stages import release_task_ids

IMAGE = "registry.opsdag.local/demo-api:1.1.0"
STABLE = "registry.opsdag.local/demo-api:1.0.0"
T0 = datetime(2026, 11, 24, 5, 0, tzinfo=UTC)
HEALTHY_CANARY = "2 instance(s) of 1.1.0 answer /healthz and are UP in HAProxy"
CHECKS = [
    {"name": "platform and router reachable", "ok": True, "detail": "status read"},
    {"name": "Prometheus reachable", "ok": True, "detail": "prometheus_default answers queries"},
]
KILLED = "the task failed without recording an error (its process ended: see its log)"


def demo_api(**changes) -> ServiceSpec:
    data = yaml.safe_load((include_dir() / "services" / "demo-api.yaml").read_text())
    data.update(changes)
    return ServiceSpec.model_validate(data)


SERVICE = demo_api()


def metric(name: str, phase: str, **counts) -> dict:
    fields = {"passed": 0, "failed": 0, "inconclusive": 0, "errors": 0, **counts}
    return MetricSummary(
        metric=name,
        phase=phase,
        reason=f"{name} {phase}",
        limit="max 0.02",
        last_value=0.001 if fields["passed"] else None,
        last_baseline=None,
        **fields,
    ).to_dict()


def verdict(weight: int, phase: str, reason: str, metrics=()) -> dict:
    return {
        "gate": f"stage_{weight}",
        "weight": weight,
        "phase": phase,
        "reason": reason,
        "started_at": (T0 + timedelta(seconds=weight)).timestamp(),
        "decided_at": (T0 + timedelta(seconds=weight + 20)).timestamp(),
        "metrics": list(metrics),
    }


PASSED_10 = verdict(10, "pass", "all 1 metrics within limits", [metric("error-rate", "pass", passed=3)])


def facts(**changes) -> ReleaseFacts:
    """A release of 1.1.0 that got through preflight and deployed a ready canary."""
    base = {
        "service": SERVICE,
        "dag_id": "release__demo-api",
        "run_id": "manual__2026-11-24T05:00:00+00:00",
        "started_at": T0,
        "finished_at": T0 + timedelta(seconds=90),
        "params": {"image": IMAGE, "reason": "", "dry_run": False},
        "request": {"image": IMAGE, "strategy": None, "reason": "pricing", "dry_run": False, "build": False},
        "preflight": {"stable_image": STABLE, "checks": CHECKS},
        "readiness": {"status": "ready", "reason": HEALTHY_CANARY},
    }
    return ReleaseFacts(**{**base, **changes})


def rolled_back(**changes) -> ReleaseFacts:
    rollback = {"performed": True, "started_at": (T0 + timedelta(seconds=60)).timestamp(), "duration_s": 1.2}
    return facts(rollback={**rollback, "finished_at": rollback["started_at"] + 1.2}, **changes)


# ---------------------------------------------------------------------------- the status


@pytest.mark.parametrize(
    ("inputs", "status"),
    [
        ({"dry_run": True, "request": {"image": IMAGE}}, "planned"),
        ({"dry_run": True, "request": None}, "refused"),  # a refused request is refused, dry run or not
        ({"request": None}, "refused"),
        ({"preflight": None}, "refused"),
        ({"preflight": {"checks": []}}, "refused"),  # no check ran: not a pass
        ({"preflight": {"checks": [{"name": "x", "ok": True}, {"name": "y", "ok": False}]}}, "refused"),
        ({"rollback": {"performed": True}, "post_promotion": {"ok": True}}, "rolled_back"),
        ({"rollback": {"performed": False}, "post_promotion": {"ok": True}}, "promoted"),
        ({"post_promotion": {"ok": False}}, "failed"),
        ({}, "failed"),  # neither rolled back nor validated: nobody can say it serves
    ],
)
def test_release_status(inputs, status):
    given = {
        "dry_run": False,
        "request": {"image": IMAGE},
        "preflight": {"checks": CHECKS},
        "rollback": None,
        "post_promotion": None,
        **inputs,
    }
    assert release_status(**given) == status


def test_task_ids_in_run_order_with_approvals():
    steps = [{"weight": 25, "bake": "10s", "approval": True}, {"weight": 100, "bake": "10s"}]
    service = demo_api(canary={"steps": steps})
    assert release_task_ids(service, "canary") == [
        "validate_request",
        "build",
        "preflight",
        "strategy",
        "canary.deploy",
        "canary.smoke",
        "canary.stage_25.approval",
        "canary.stage_25.set_weight",
        "canary.stage_25.gate",
        "canary.stage_100.set_weight",
        "canary.stage_100.gate",
        "promote",
        "post_promotion_check",
        "rollback",
    ]


# ---------------------------------------------------------------------------- a step that fails on its own


def test_a_killed_set_weight_is_the_reason_not_the_canarys_health():
    record = build_record(
        rolled_back(
            verdicts={"canary.stage_10.gate": PASSED_10},
            states={
                "canary.stage_10.gate": "success",
                "canary.stage_25.gate": "upstream_failed",
                "canary.stage_50.gate": "skipped",
            },
            failure=("canary.stage_25.set_weight", KILLED),
        )
    )
    assert record.status == "rolled_back"
    assert [s.status for s in record.stages] == ["passed", "failed", "skipped", "not_run"]
    assert record.rollback.reason == f"canary.stage_25.set_weight: {KILLED}"
    assert summary(record) == (
        f"demo-api 1.1.0 rolled back at stage_25 (25 %): canary.stage_25.set_weight: {KILLED}; "
        "stable 1.0.0 serves 100 %. 1 min 30 s."
    )
    assert record.incidents == (f"stage_25 failed: canary.stage_25.set_weight: {KILLED}",)
    md = render_markdown(record)
    assert HEALTHY_CANARY not in md
    assert "Incidents: none recorded" not in md
    assert f"- Incident: stage_25 failed: canary.stage_25.set_weight: {KILLED}" in md
    assert next_actions(record) == [
        "Read the log of task canary.stage_25.set_weight in run manual__2026-11-24T05:00:00+00:00: "
        f"{KILLED}. Fix what made it fail, then run the release again."
    ]


def test_a_split_not_the_one_asked_is_said_in_the_stage():
    """A replica ratio rounds: the stage says what it gave, before the gate's reason."""
    said = "asked 10 %, got 1 of 5 replicas = 20 %"
    record = build_record(
        facts(
            verdicts={"canary.stage_10.gate": PASSED_10},
            states={"canary.stage_10.gate": "success"},
            splits={"canary.stage_10.set_weight": said, "canary.stage_25.set_weight": None},
        )
    )
    assert record.stages[0].reason == f"{said}; all 1 metrics within limits"
    assert record.stages[1].reason == "not reached"
    assert f"{said}; all 1 metrics within limits" in render_markdown(record)


def test_promote_raising_names_promote_and_its_error():
    error = "AirflowFailException: HAProxy runtime API refused: server demo-api/canary1 not found"
    record = build_record(
        rolled_back(
            verdicts={f"canary.stage_{w}.gate": verdict(w, "pass", "ok") for w in (10, 25, 50, 100)},
            failure=("promote", error),
        )
    )
    assert cause(record) == "promote: HAProxy runtime API refused: server demo-api/canary1 not found"
    assert record.rollback.reason == cause(record)
    assert record.incidents == (
        "promote failed: HAProxy runtime API refused: server demo-api/canary1 not found",
    )
    assert "Investigate" not in " ".join(next_actions(record))


def test_a_canary_that_never_becomes_ready_is_one_incident_with_its_reason():
    readiness = {"status": "failed", "reason": "instance 1.4.0-crash exited with code 3"}
    error = "AirflowFailException: canary 1.4.0-crash failed: instance 1.4.0-crash exited with code 3"
    record = build_record(
        rolled_back(
            readiness=readiness,
            failure=("canary.deploy", error),
            states=dict.fromkeys([f"canary.stage_{w}.gate" for w in (10, 25, 50, 100)], "skipped"),
        )
    )
    assert record.incidents == ("canary failed: instance 1.4.0-crash exited with code 3",)
    assert {s.status for s in record.stages} == {"skipped"}
    assert "exited with code 3" in summary(record)
    assert next_actions(record)[0].startswith("Investigate why 1.1.0 failed before releasing again")


def test_a_failed_rollback_is_an_incident_too():
    record = build_record(
        rolled_back(
            verdicts={"canary.stage_10.gate": verdict(10, "fail", "error-rate 0.09 > max 0.02")},
            failure=(
                "canary.stage_10.gate",
                "AirflowFailException: gate stage_10 failed: error-rate 0.09 > max 0.02",
            ),
            rollback_error="AirflowFailException: rollback incomplete: stable unhealthy",
        )
    )
    assert record.incidents == (
        "stage_10 failed: error-rate 0.09 > max 0.02",
        "rollback failed: rollback incomplete: stable unhealthy",
    )


def test_a_rejected_approval_moved_no_traffic_and_says_so():
    service = demo_api(
        canary={"steps": [{"weight": 25, "bake": "10s", "approval": True}, {"weight": 100, "bake": "10s"}]}
    )
    record = build_record(
        rolled_back(
            service=service, failure=("canary.stage_25.approval", "AirflowFailException: Rejected by alice")
        )
    )
    assert [s.status for s in record.stages] == ["not_run", "not_run"]
    assert summary(record).startswith(
        "demo-api 1.1.0 rolled back: canary.stage_25.approval: Rejected by alice;"
    )
    assert "took up to" not in render_markdown(record)  # no traffic reached 1.1.0


# ---------------------------------------------------------------------------- no data: check Prometheus


def test_prometheus_down_at_the_gate_advises_checking_prometheus():
    reason = (
        "no data: Prometheus cannot be queried (Prometheus unreachable at http://127.0.0.1:9 "
        "(ConnectError)); never promoted on missing data"
    )
    record = build_record(
        rolled_back(
            verdicts={"canary.stage_10.gate": verdict(10, "inconclusive", reason)},
            failure=("canary.stage_10.gate", "x"),
        )
    )
    actions = next_actions(record)
    assert actions == [
        "Check Prometheus (connection prometheus_default): 1.1.0 could not be measured, so it was "
        "rolled back for lack of data, not for a measured fault; release it again once Prometheus "
        "answers queries."
    ]
    assert "Investigate" not in render_markdown(record)


def test_metrics_without_data_advise_prometheus_measured_failures_advise_investigating():
    stopped = [
        metric("error-rate", "fail", passed=2, inconclusive=3),  # data stopped coming mid-bake
        metric("latency-p95", "fail", passed=2, inconclusive=3),
    ]
    record = build_record(
        rolled_back(
            verdicts={"canary.stage_10.gate": verdict(10, "fail", "no data", stopped)},
            failure=("canary.stage_10.gate", "x"),
        )
    )
    assert [a.split(":")[0] for a in next_actions(record)] == [
        "Check Prometheus (connection prometheus_default)"
    ]

    bad = [metric("error-rate", "fail", failed=3), metric("latency-p95", "fail", inconclusive=3)]
    record = build_record(
        rolled_back(
            verdicts={"canary.stage_10.gate": verdict(10, "fail", "bad", bad)},
            failure=("canary.stage_10.gate", "x"),
        )
    )
    actions = next_actions(record)
    assert actions[0] == "Investigate error-rate of 1.1.0 before releasing again: error-rate fail."
    assert actions[1].startswith("Check Prometheus (connection prometheus_default)")
    assert actions[2] == "Compare 1.1.0 with 1.0.0 (changes, logs) to find the cause."


def test_a_query_error_advises_fixing_the_query():
    broken = [metric("latency-p95", "error", errors=1)]
    record = build_record(
        rolled_back(
            verdicts={"canary.stage_10.gate": verdict(10, "error", "q", broken)},
            failure=("canary.stage_10.gate", "x"),
        )
    )
    assert next_actions(record) == ["Fix the query of latency-p95 in demo-api's analysis: latency-p95 error."]


def test_lacks_data_is_a_failure_without_a_measured_fault():
    assert MetricSummary.from_dict(metric("m", "fail", inconclusive=3)).lacks_data
    assert MetricSummary.from_dict(metric("m", "fail")).lacks_data  # never measured in the window
    assert not MetricSummary.from_dict(metric("m", "fail", failed=1, inconclusive=3)).lacks_data
    assert not MetricSummary.from_dict(metric("m", "error", errors=1)).lacks_data
    assert not MetricSummary.from_dict(metric("m", "pass", passed=1)).lacks_data


# ---------------------------------------------------------------------------- refused at run time


def test_a_request_refused_at_run_time_says_the_field_and_the_problem():
    error = "AirflowFailException: release request refused:\ncolour: Extra inputs are not permitted"
    record = build_record(
        facts(request=None, preflight=None, readiness=None, failure=("validate_request", error))
    )
    assert record.status == "refused"
    assert summary(record) == (
        "demo-api 1.1.0 refused before any change: validate_request: release request refused: "
        "colour: Extra inputs are not permitted; the stable version serves 100 %. 1 min 30 s."
    )
    assert "no reason recorded" not in render_markdown(record)
    assert record.incidents == ()  # nothing changed: a refusal is not an incident
    assert next_actions(record) == [
        "Fix the request (release request refused: colour: Extra inputs are not permitted) "
        "and trigger release__demo-api again."
    ]


# ---------------------------------------------------------------------------- user text


HOSTILE = "fix \u202egnp.exe & <img src=x onerror=alert(1)> **bold** [link](http://evil) `code`\x07\x1b[31m"


def test_user_text_is_plain_and_escaped_in_markdown_json_and_slack():
    record = build_record(facts(request={"image": IMAGE, "reason": HOSTILE}, post_promotion={"ok": True}))
    md = render_markdown(record)
    reason_line = next(line for line in md.splitlines() if line.startswith("- Reason given: "))
    assert reason_line == (
        "- Reason given: fix gnp.exe &amp; &lt;img src=x onerror=alert(1)&gt; \\*\\*bold\\*\\* "
        "\\[link\\](http://evil) \\`code\\`\\[31m"
    )
    for text in (md, json.dumps(report_data(record), ensure_ascii=False)):
        assert "\u202e" not in text and "\x07" not in text and "\x1b" not in text
    assert "<img" not in md
    text, blocks = release_started(service_name="demo-api", image=IMAGE, strategy="canary", reason=HOSTILE)
    body = text + json.dumps(blocks, ensure_ascii=False)
    assert "<img" not in body and "\u202e" not in body and "\x07" not in body
    assert "&lt;img src=x" in body
    assert "\u202e" not in json.dumps(release_outcome(record), ensure_ascii=False)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("error-rate 0.081 > max 0.02", "error-rate 0.081 &gt; max 0.02"),
        ("stage_10 and manual__2026", "stage_10 and manual__2026"),  # inside a word _ is no emphasis
        ("__init__ x_", "\\_\\_init\\_\\_ x\\_"),
        ("_em_ *strong* ~~del~~ a|b", "\\_em\\_ \\*strong\\* \\~\\~del\\~\\~ a\\|b"),
        ("line\nbreak\ttab", "line break tab"),
        ("<!channel>", "&lt;!channel&gt;"),
        ("back\\slash", "back\\\\slash"),
    ],
)
def test_markdown_text(text, shown):
    assert markdown_text(text) == shown


@pytest.mark.parametrize(
    ("text", "shown"), [("# title", "\\# title"), ("- item", "\\- item"), ("1. one", "1\\. one")]
)
def test_markdown_text_at_the_start_of_a_line(text, shown):
    assert markdown_text(text, line_start=True) == shown
    assert markdown_text(text) == text  # mid-line they are ordinary characters


def test_slack_text_drops_controls_and_escapes_what_slack_reads():
    assert slack_text("a\u202eb <@U123> & c\x00") == "ab &lt;@U123&gt; &amp; c"


# ---------------------------------------------------------------------------- round trip and monitoring


def test_a_built_record_round_trips_through_its_json_report():
    record = build_record(
        rolled_back(
            verdicts={"canary.stage_10.gate": PASSED_10},
            failure=("canary.stage_25.set_weight", KILLED),
            monitoring={"availability": 0.999, "latency_p99_s": None, "window_s": 90},
        )
    )
    again = ReleaseRecord.from_dict(json.loads(json.dumps(report_data(record))))
    assert again.model_copy(update={"next_actions": ()}) == record
    assert again.failure.task_id == "canary.stage_25.set_weight"


def test_monitoring_queries_cover_the_release_window_and_select_stable():
    queries = monitoring_queries(
        SERVICE.analysis.monitoring, {"stable": 'track="stable"'}, monitoring_window_s(3)
    )
    assert set(queries) == {
        "availability",
        "error_rate",
        "latency_p50_s",
        "latency_p95_s",
        "latency_p99_s",
        "throughput_rps",
    }
    assert queries["throughput_rps"] == 'sum(rate(opsdag_demo_http_requests_total{track="stable"}[15s]))'
    assert monitoring_window_s(95.7) == 95
    with pytest.raises(ValueError, match="uses \\$stable"):
        monitoring_queries(SERVICE.analysis.monitoring, {"canary": 'track="canary"'}, 60)


def test_the_run_note_is_escaped_and_fits_airflows_column():
    long_error = "release request refused:\ncolour: " + "<x> & " * 400
    record = build_record(facts(request=None, failure=("validate_request", long_error)))
    note = note_markdown(summary(record))
    assert len(note) <= 1000
    assert "<x>" not in note and note.count("&lt;x&gt;") > 10
    assert not note.endswith(("&", "&l", "&lt", "&g", "&gt", "&a", "&am", "&amp"))


def test_figures_from_an_unreachable_prometheus_are_no_data(monkeypatch):
    import socket

    from opsdag.hooks.prometheus import PrometheusHook

    with socket.socket() as free:  # a port nobody listens on: connection refused at once
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_PROM_DOWN", json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": port})
    )
    figures = PrometheusHook("prom_down", timeout=2).query_figures(
        {"availability": "vector(1)", "error_rate": "x"}
    )
    assert figures == {"availability": None, "error_rate": None}
    monkeypatch.delenv("AIRFLOW_CONN_PROM_NOWHERE", raising=False)
    nowhere = PrometheusHook("prom_nowhere")
    assert nowhere.query_figures({"availability": "vector(1)"}) == {"availability": None}

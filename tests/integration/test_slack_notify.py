"""Release messages reach Slack through Airflow's Slack webhook connection, or fail quietly.

Slack is a local HTTP server that records what it is sent (tests/support/slack_server.py);
the connection is an ``AIRFLOW_CONN_*`` environment variable, as in production, and the
provider's own SlackWebhookHook does the posting.
"""

from __future__ import annotations

import json
import logging

import pytest
import yaml
from support.slack_server import WEBHOOK_TOKEN, SlackRecorder, dead_connection_json

from opsdag.notify.notifiers import notify_release_outcome, notify_release_started, notify_stage_verdict
from opsdag.notify.slack import send_slack
from opsdag.paths import include_dir
from opsdag.reports.release_wording import summary
from opsdag.spec.service import ServiceSpec

pytestmark = pytest.mark.integration

CONN_ID = "slack_test"
IMAGE = "registry.opsdag.local/demo-api:1.2.0-errors"
STABLE = "registry.opsdag.local/demo-api:1.0.0"

STAGE_10 = {
    "name": "stage_10",
    "weight": 10,
    "bake_s": 30,
    "status": "failed",
    "metrics": [
        {  # the gate's MetricSummary, as a dict
            "metric": "error-rate",
            "phase": "fail",
            "last_value": 0.081,
            "last_baseline": 0.004,
            "limit": "max 0.02",
            "passed": 0,
            "failed": 3,
            "inconclusive": 0,
            "errors": 0,
            "reason": "error-rate 0.081 > max 0.02",
        },
        {
            "metric": "latency-p95",
            "phase": "pass",
            "last_value": 0.042,
            "last_baseline": 0.038,
            "limit": "max 0.3",
            "passed": 3,
            "failed": 0,
            "inconclusive": 0,
            "errors": 0,
            "reason": "latency-p95 passed",
        },
    ],
}

RECORD = {
    "service": "demo-api",
    "dag_id": "release__demo-api",
    "run_id": "manual__2026-11-24T05:00:00+00:00",
    "image": IMAGE,
    "previous_image": STABLE,
    "strategy": "canary",
    "status": "rolled_back",
    "started_at": "2026-11-24T05:00:00+00:00",
    "finished_at": "2026-11-24T05:00:41+00:00",
    "stages": [STAGE_10, {"name": "stage_25", "weight": 25, "bake_s": 30, "status": "not_run"}],
    "monitoring": {"error_rate": 0.0081, "latency_p95_s": 0.041, "availability": None},
    "rollback": {"performed": True, "reason": "error-rate 0.081 > max 0.02 at stage_10"},
}


@pytest.fixture(scope="module")
def slack_server():
    with SlackRecorder() as server:
        yield server


@pytest.fixture
def slack(slack_server, monkeypatch):
    """The recording server, emptied, answering 200 ok, behind the connection ``slack_test``."""
    slack_server.reset()
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", slack_server.connection_json())
    return slack_server


@pytest.fixture
def warnings_of_send_slack():
    """What opsdag.notify.slack logs (Airflow's logging setup bypasses caplog's root handler)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.WARNING)
    logger = logging.getLogger("opsdag.notify.slack")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def test_the_connection_points_the_providers_hook_at_the_recorder(slack):
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

    hook = SlackWebhookHook(slack_webhook_conn_id=CONN_ID)
    assert hook._get_conn_params()["url"] == slack.url
    hook.send(text="hello")
    (post,) = slack.posts
    assert post.path == f"/{WEBHOOK_TOKEN}"
    assert post.headers["content-type"].startswith("application/json")
    assert post.json == {"text": "hello"}


def test_release_started_arrives(slack):
    assert notify_release_started(
        CONN_ID,
        service_name="demo-api",
        image=IMAGE,
        strategy="canary",
        previous_image=STABLE,
        stages=[{"name": f"stage_{w}", "weight": w, "bake_s": 30} for w in (10, 25, 50, 100)],
        reason="pricing endpoint",
        dag_id="release__demo-api",
        run_id="manual__2026-11-24T05:00:00+00:00",
    )
    (message,) = slack.messages
    assert message["text"] == (
        "demo-api: releasing 1.2.0-errors by canary: 10 → 25 → 50 → 100 %, replacing 1.0.0. "
        "Reason: pricing endpoint"
    )
    assert message["blocks"][0]["text"]["text"] == "demo-api: release started"
    assert message["blocks"][1]["text"]["text"] == (
        "*1.2.0-errors* replaces *1.0.0* by canary: 10 → 25 → 50 → 100 %, 30 s each.\n"
        "Reason: pricing endpoint"
    )


def test_stage_verdict_arrives_with_the_measured_values(slack):
    assert notify_stage_verdict(CONN_ID, STAGE_10, service_name="demo-api", image=IMAGE)
    (message,) = slack.messages
    assert message["text"] == "demo-api 1.2.0-errors stage_10 (10 %) FAILED: error-rate 0.081 &gt; max 0.02"
    fields = [f["text"] for f in message["blocks"][1]["fields"]]
    assert "error-rate FAILED: 0.081 (stable 0.004), limit max 0.02; 0 pass, 3 fail" in fields
    assert "latency-p95 passed: 0.042 (stable 0.038), limit max 0.3; 3 pass, 0 fail" in fields


def test_release_outcome_arrives_as_the_reports_summary(slack):
    assert notify_release_outcome(CONN_ID, RECORD, report_url="http://airflow.local/reports/r.md")
    (message,) = slack.messages
    assert message["text"] == summary(RECORD).replace(">", "&gt;")
    body = json.dumps(message, ensure_ascii=False)
    assert "*Error rate*\\n0.0081" in body
    assert "*Availability*\\nno data" in body
    assert "Investigate error-rate of 1.2.0-errors before releasing again" in body
    assert "<http://airflow.local/reports/r.md|report>" in body


def test_a_service_spec_names_the_connection_and_the_channel(slack):
    spec_data = yaml.safe_load((include_dir() / "services" / "demo-api.yaml").read_text())
    spec_data["notifications"] = {"slack": {"channel": "#releases", "connection_id": CONN_ID}}
    spec = ServiceSpec.model_validate(spec_data)
    gate_verdict = {"gate": "stage_10", "weight": 10, "phase": "fail", "metrics": STAGE_10["metrics"]}
    # Incoming webhooks post to their own channel: the provider warns that "channel" is ignored.
    with pytest.warns(UserWarning, match="cannot override the default channel"):
        assert notify_stage_verdict(spec, gate_verdict, image=IMAGE)
    (message,) = slack.messages
    assert message["channel"] == "#releases"
    assert message["text"].startswith("demo-api 1.2.0-errors stage_10 (10 %) FAILED: error-rate 0.081")


def test_a_service_spec_without_slack_sends_nothing(slack):
    spec = ServiceSpec.model_validate(
        yaml.safe_load((include_dir() / "services" / "demo-api.yaml").read_text())
    )
    spec = spec.model_copy(update={"notifications": spec.notifications.model_copy(update={"slack": None})})
    assert notify_release_outcome(spec, RECORD) is False
    assert slack.posts == []


def test_messages_carry_no_secret(slack):
    notify_release_outcome(CONN_ID, RECORD)
    notify_stage_verdict(CONN_ID, STAGE_10, service_name="demo-api", image=IMAGE)
    for post in slack.posts:
        assert WEBHOOK_TOKEN.encode() not in post.body
        assert str(slack.port).encode() not in post.body


def test_slack_answering_500_returns_false_and_logs(slack, warnings_of_send_slack):
    slack.respond_with(500, "internal_error")
    assert notify_release_outcome(CONN_ID, RECORD) is False
    assert len(slack.posts) == 1  # it did try, once
    (warning,) = warnings_of_send_slack
    assert "Status Code: 500" in warning.getMessage()
    assert WEBHOOK_TOKEN not in warning.getMessage()


def test_a_dead_endpoint_returns_false_and_logs(monkeypatch, warnings_of_send_slack):
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", dead_connection_json())
    assert notify_stage_verdict(CONN_ID, STAGE_10, service_name="demo-api", image=IMAGE) is False
    (warning,) = warnings_of_send_slack
    assert "Connection refused" in warning.getMessage()
    assert WEBHOOK_TOKEN not in warning.getMessage()


def test_a_stopped_recorder_is_a_dead_endpoint(monkeypatch, warnings_of_send_slack):
    with SlackRecorder() as server:
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_GONE", server.connection_json())
        assert send_slack("slack_gone", "first") is True
    assert send_slack("slack_gone", "second") is False
    assert server.messages == [{"text": "first"}]
    assert len(warnings_of_send_slack) == 1


def test_a_missing_connection_returns_false_and_logs(monkeypatch, warnings_of_send_slack):
    monkeypatch.delenv("AIRFLOW_CONN_SLACK_NOWHERE", raising=False)
    assert notify_release_outcome("slack_nowhere", RECORD) is False
    (warning,) = warnings_of_send_slack
    assert "slack_nowhere" in warning.getMessage() and "isn't defined" in warning.getMessage()


def test_no_connection_configured_is_skipped_quietly(slack):
    assert notify_release_outcome(None, RECORD) is False
    assert slack.posts == []

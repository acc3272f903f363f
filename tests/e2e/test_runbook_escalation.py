"""The escalation of a runbook that could not mitigate, answered by a person through Airflow's REST API.

On a real ``airflow standalone`` against the sandbox: demo-api's stable version answers
8 % of its requests with a 500 (``1.2.0-errors``, set through the sandbox's controls)
and no release of it is in the reports, so ``runbook__high-error-rate``, started by a
HighErrorRate payload posted to ``/opsdag/alerts``, finds no recent release to roll back.
It changes nothing, and its ``escalate`` step posts to Slack with the mentions and why,
then waits for a person's choice (Airflow 3.3's Human-in-the-loop); the answer, given
through the REST API, is in the postmortem.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml
from support.slack_server import SlackRecorder
from support.standalone_run import standalone_airflow
from support.waiting import wait_for

from opsdag.airflow_api import AirflowClient

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]
ROOT = Path(__file__).resolve().parents[2]
DAG = "runbook__high-error-rate"
TASK = "escalate"
ERROR_SHARE = (
    'sum(rate(opsdag_demo_http_requests_total{service="demo-api", code=~"5.."}[1m])) / '
    'sum(rate(opsdag_demo_http_requests_total{service="demo-api"}[1m]))'
)


@pytest.fixture(scope="module")
def slack() -> Iterator[SlackRecorder]:
    with SlackRecorder() as recorder:
        yield recorder


@pytest.fixture(scope="module")
def airflow(
    e2e_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, sandbox, slack
) -> Iterator[tuple]:
    """Standalone Airflow on a copy of include/ whose high-error-rate runbook acts without approval."""
    from opsdag.dev.sandbox.connections import alerts_token

    include = tmp_path_factory.mktemp("escalation-include")
    shutil.copytree(ROOT / "include", include, dirs_exist_ok=True)
    path = include / "runbooks" / "high-error-rate.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["notifications"] = {"slack": {"channel": "#incidents", "connection_id": "slack_runbook"}}
    spec["guards"] = {**spec["guards"], "dry_run": False, "approval_for_destructive": False}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    state = tmp_path_factory.mktemp("escalation-state")
    env = {
        **e2e_env,
        "OPSDAG_INCLUDE_DIR": str(include),
        "OPSDAG_STATE_DIR": str(state),
        "OPSDAG_REPORTS_DIR": str(state / "reports"),
    }
    os.environ["AIRFLOW_CONN_SLACK_RUNBOOK"] = slack.connection_json()  # standalone's workers inherit it
    try:
        with standalone_airflow(env) as credentials:
            from opsdag.dev.sandbox.alertmanager_server import point_alerts_at

            point_alerts_at(sandbox.layout, None)  # only this test's POST starts a run
            with AirflowClient(credentials) as client:
                client.unpause(DAG)
            yield credentials, alerts_token(sandbox.layout), state / "reports"
    finally:
        os.environ.pop("AIRFLOW_CONN_SLACK_RUNBOOK", None)
        sandbox.reset()


def fire(airflow: tuple, fingerprint: str) -> str:
    """POST HighErrorRate for demo-api as Alertmanager does; the run it started."""
    credentials, token, _ = airflow
    alert = {
        "status": "firing",
        "labels": {"alertname": "HighErrorRate", "service": "demo-api", "severity": "critical"},
        "annotations": {"summary": "demo-api answers 8 % of requests with a 5xx"},
        "startsAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    }
    body = {"version": "4", "status": "firing", "groupKey": "{}:{}", "receiver": "opsdag", "alerts": [alert]}
    answer = httpx.post(
        f"{credentials.url.rstrip('/')}/opsdag/alerts",
        content=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    [started] = [s for s in answer.json()["started"] if s["runbook"] == "high-error-rate"]
    return started["run_id"]


def answer_escalation(airflow: tuple, run_id: str, option: str) -> None:
    """Choose ``option`` once the escalation waits, parked, and the scheduler has seen its parked
    try end (answering sooner races Airflow 3.3: see test_runbook_approval.answer_approval)."""
    credentials, log = airflow[0], airflow[2].parent / "airflow" / "logs" / "airflow-standalone.log"
    event = (
        "Received executor event with state success for task instance "
        f"TaskInstanceKey(dag_id='{DAG}', task_id='{TASK}', run_id='{run_id}'"
    )
    with AirflowClient(credentials) as client:

        def parked() -> bool:
            details = client.request("GET", f"/dags/{DAG}/dagRuns/{run_id}/hitlDetails").get(
                "hitl_details", []
            )
            state = {t["task_id"]: t["state"] for t in client.task_instances(DAG, run_id)}.get(TASK)
            asked = any(not d.get("response_received") for d in details)
            return asked and state == "awaiting_input" and event in log.read_text(errors="replace")

        wait_for(parked, 240, interval=0.5, what=f"{TASK} parked, waiting for a choice")
        client.request(
            "PATCH",
            f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/{TASK}/-1/hitlDetails",
            json={"chosen_options": [option], "params_input": {}},
        )
        wait_for(
            lambda: client.dag_run(DAG, run_id)["state"] in ("success", "failed"),
            120,
            interval=1,
            what="the runbook run's end",
        )


def test_no_recent_release_to_roll_back_calls_people_and_records_who_took_over(
    airflow, sandbox, slack
) -> None:
    sandbox.reset("1.2.0-errors")  # through the sandbox's controls; no release report says so
    stable = sandbox.driver().status().stable.image

    def share() -> float:
        result = sandbox.prometheus.query(ERROR_SHARE)
        return float(result[0]["value"][1]) if result else 0.0

    wait_for(lambda: share() > 0.01, timeout=60, interval=0.5, what="the 5xx share above 1 %")
    slack.reset()
    run_id = fire(airflow, "e5ca1a7e0000a001")

    answer_escalation(airflow, run_id, "Taking over")

    assert sandbox.driver().status().stable.image == stable  # nothing was rolled back
    [message] = [m for m in slack.messages if "<!subteam^platform-team>" in m["text"]]
    assert message["channel"] == "#incidents"
    assert message["text"].startswith("<!subteam^platform-team> [high-error-rate] HighErrorRate (demo-api): ")
    assert (
        "Why: roll-back-last-release: no recent release to roll back: no promoted release" in message["text"]
    )
    assert "Choose in Airflow (Acknowledged, Taking over): " in message["text"]
    path = airflow[2] / DAG / f"{run_id}.json"
    report, markdown = json.loads(path.read_text()), path.with_suffix(".md").read_text()
    steps = {a["step"]: a for a in report["actions"]}
    rollback = steps["roll-back-last-release"]
    assert (rollback["result"], rollback["data"]["escalate"]) == ("skipped", True)
    assert rollback["detail"] == "no recent release to roll back: no promoted release in the reports"
    escalate = steps["escalate"]
    assert escalate["result"] == "done", escalate
    assert escalate["detail"].startswith(
        "sent to Slack #incidents <!subteam^platform-team>; Taking over (by "
    )
    assert escalate["data"]["choice"]["chosen"] == ["Taking over"]
    assert [e["to"] for e in report["escalations"]] == ["Slack #incidents <!subteam^platform-team>"]
    assert report["verify"] is None or report["verify"]["recovered"] is False
    assert "no recent release to roll back" in markdown

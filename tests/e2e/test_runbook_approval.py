# ruff: noqa: F811  (pytest fixtures imported from the db-connections module are redefined as arguments)
"""The approval before ``terminate_idle_connections``, answered through Airflow's REST API.

The whole path of an incident, on a real ``airflow standalone`` against the sandbox: an
Alertmanager payload posted to ``/opsdag/alerts`` starts ``runbook__db-connections`` (a
copy whose guards say: not a dry run, ask before destructive steps), the run waits for a
person at ``approve_terminate-idle`` (Airflow 3.3's Human-in-the-loop), and the answer
decides: Reject leaves every connection alone and the postmortem says who rejected it;
Approve ends the idle connections of the test's role and says who approved. The alert
resolving while the approval waits answers it for the people: Reject, saying why.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from support.standalone_run import standalone_airflow
from support.waiting import wait_for
from test_runbook_db_connections import OLDER_THAN_S, ROLE, demo_db, hold_idle, idle_sessions, slack  # noqa: F401

from opsdag.airflow_api import AirflowClient

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]
ROOT = Path(__file__).resolve().parents[2]
DAG = "runbook__db-connections"
APPROVAL = "approve_terminate-idle"
RESOLVED_AT = "2026-11-30T05:10:00Z"


@pytest.fixture(scope="module")
def airflow(
    e2e_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, sandbox, slack
) -> Iterator[tuple]:
    """Standalone Airflow on a copy of include/ whose db-connections runbook acts, after approval."""
    from opsdag.dev.sandbox.connections import alerts_token

    include = tmp_path_factory.mktemp("approval-include")
    shutil.copytree(ROOT / "include", include, dirs_exist_ok=True)
    path = include / "runbooks" / "db-connections.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["steps"][1].update(older_than=f"{OLDER_THAN_S}s", user=ROLE)
    spec["steps"][2].update(timeout="30s", interval="1s")
    spec["steps"] = spec["steps"][:3]  # the notify step is covered by the other module
    spec["notifications"] = {"slack": {"channel": "#incidents", "connection_id": "slack_runbook"}}
    spec["guards"] = {**spec["guards"], "dry_run": False, "approval_for_destructive": True}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    state = tmp_path_factory.mktemp("approval-state")
    env = {
        **e2e_env,
        "OPSDAG_INCLUDE_DIR": str(include),
        "OPSDAG_STATE_DIR": str(state),
        "OPSDAG_REPORTS_DIR": str(state / "reports"),
    }
    os.environ["AIRFLOW_CONN_SLACK_RUNBOOK"] = slack.connection_json()  # standalone's workers inherit it
    try:
        with standalone_airflow(env) as credentials:
            with AirflowClient(credentials) as client:
                client.unpause(DAG)
            yield credentials, alerts_token(sandbox.layout), state / "reports"
    finally:
        os.environ.pop("AIRFLOW_CONN_SLACK_RUNBOOK", None)


def fire(airflow: tuple, fingerprint: str) -> str:
    """POST DatabaseConnectionsExhausted for demo-db as Alertmanager does; the run it started."""
    [started] = [s for s in post_alert(airflow, fingerprint)["started"] if s["runbook"] == "db-connections"]
    return started["run_id"]


def post_alert(airflow: tuple, fingerprint: str, status: str = "firing") -> dict[str, Any]:
    """POST the alert as Alertmanager does (``firing`` or ``resolved``); the receiver's answer."""
    credentials, token, _ = airflow
    alert = {
        "status": status,
        "labels": {"alertname": "DatabaseConnectionsExhausted", "service": "demo-db", "severity": "critical"},
        "annotations": {"summary": "demo-db uses 85% of max_connections"},
        "startsAt": "2026-11-30T05:00:00Z",
        "endsAt": RESOLVED_AT if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    }
    body = {"version": "4", "status": status, "groupKey": "{}:{}", "receiver": "opsdag", "alerts": [alert]}
    answer = httpx.post(
        f"{credentials.url.rstrip('/')}/opsdag/alerts",
        content=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def answer_approval(airflow: tuple, run_id: str, option: str) -> None:
    """Answer through the REST API once the approval waits; the run ends in success."""
    wait_parked(airflow, run_id)
    with AirflowClient(airflow[0]) as client:
        client.request(
            "PATCH",
            f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/{APPROVAL}/-1/hitlDetails",
            json={"chosen_options": [option], "params_input": {}},
        )
    wait_run_end(airflow, run_id)


def wait_run_end(airflow: tuple, run_id: str) -> None:
    with AirflowClient(airflow[0]) as client:
        wait_for(
            lambda: client.dag_run(DAG, run_id)["state"] in ("success", "failed"),
            120,
            interval=1,
            what="the runbook run's end",
        )
        assert client.dag_run(DAG, run_id)["state"] == "success"


def wait_parked(airflow: tuple, run_id: str) -> None:
    """Wait until the approval waits, parked, and the scheduler has seen its parked try end.

    Answering within a second of the park races Airflow 3.3: the parked try's executor
    event, handled after the resumed try started, makes the scheduler fail the resumed
    task ("finished with state success, but the task instance's state attribute is
    running"). A person never answers that fast; the test waits for that event in the
    standalone log (a condition, not a sleep).
    """
    credentials, log = airflow[0], airflow[2].parent / "airflow" / "logs" / "airflow-standalone.log"
    event = (
        "Received executor event with state success for task instance "
        f"TaskInstanceKey(dag_id='{DAG}', task_id='{APPROVAL}', run_id='{run_id}'"
    )
    with AirflowClient(credentials) as client:

        def parked() -> bool:
            path = f"/dags/{DAG}/dagRuns/{run_id}/hitlDetails"
            details = client.request("GET", path).get("hitl_details", [])
            state = {t["task_id"]: t["state"] for t in client.task_instances(DAG, run_id)}.get(APPROVAL)
            asked = any(not d.get("response_received") for d in details)
            return asked and state == "awaiting_input" and event in log.read_text(errors="replace")

        wait_for(parked, 240, interval=0.5, what=f"{APPROVAL} parked, waiting for an answer")


def postmortem(airflow: tuple, run_id: str) -> tuple[dict[str, Any], str]:
    path = airflow[2] / DAG / f"{run_id}.json"
    return json.loads(path.read_text()), path.with_suffix(".md").read_text()


def test_a_rejected_approval_changes_nothing_and_the_postmortem_says_who_rejected(
    airflow, demo_db, slack
) -> None:
    held = hold_idle(demo_db, 4)
    slack.reset()
    run_id = fire(airflow, "a770000000000001")

    answer_approval(airflow, run_id, "Reject")

    # the request went to the runbook's Slack channel, saying what happens without an answer
    [request] = [m for m in slack.messages if m["text"].startswith("Approval needed")]
    assert request["channel"] == "#incidents"
    assert "Runbook db-connections: approve terminate-idle" in request["text"]
    assert "the step is skipped" in json.dumps(request["blocks"])

    for conn in held:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    report, markdown = postmortem(airflow, run_id)
    terminate = {a["step"]: a for a in report["actions"]}["terminate-idle"]
    assert (terminate["result"], terminate["needs_approval"], terminate["approved_by"]) == (
        "skipped",
        True,
        None,
    )
    assert terminate["detail"].startswith("rejected by ") and "nothing changed" in terminate["detail"]
    assert report["figures"]["changed"] == [] and report["dry_run"] is False
    assert "| terminate-idle | mitigate | terminate_idle_connections | skipped |" in markdown
    assert "| not approved | rejected by " in markdown


def test_an_approved_termination_ends_the_idle_connections_and_names_the_approver(airflow, demo_db) -> None:
    held = hold_idle(demo_db, 4)
    run_id = fire(airflow, "a770000000000002")

    answer_approval(airflow, run_id, "Approve")

    wait_for(lambda: idle_sessions(demo_db) == 0, timeout=10, what="no session of the test's role left")
    for conn in held:
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    report, markdown = postmortem(airflow, run_id)
    terminate = {a["step"]: a for a in report["actions"]}["terminate-idle"]
    assert terminate["result"] == "done" and terminate["approved_by"]
    assert f"approved by {terminate['approved_by']}" in terminate["detail"]
    assert report["figures"]["mitigated_by"] == "terminate-idle"
    assert f"| approved by {terminate['approved_by']} |" in markdown


def test_the_alert_resolving_while_the_approval_waits_rejects_it_and_the_postmortem_says_why(
    airflow, demo_db
) -> None:
    held = hold_idle(demo_db, 4)
    fingerprint = "a770000000000003"
    run_id = fire(airflow, fingerprint)
    wait_parked(airflow, run_id)

    answer = post_alert(airflow, fingerprint, "resolved")
    [resolved] = [r for r in answer["resolved"] if r["runbook"] == "db-connections"]
    assert (resolved["run_id"], resolved["recorded"], resolved["cancelled"]) == (run_id, True, [APPROVAL])
    wait_run_end(airflow, run_id)
    again = post_alert(airflow, fingerprint, "resolved")  # Alertmanager repeats: nothing answered twice
    assert [r["cancelled"] for r in again["resolved"] if r["runbook"] == "db-connections"] == [[]]

    for conn in held:  # nothing terminated
        assert conn.execute("SELECT 1").fetchone() == (1,)
    why = "alertmanager (cancelled: the alert resolved at 2026-11-30T05:10:00+00:00)"
    with AirflowClient(airflow[0]) as client:
        [detail] = client.request("GET", f"/dags/{DAG}/dagRuns/{run_id}/hitlDetails")["hitl_details"]
        note = client.dag_run(DAG, run_id)["note"]
    assert detail["chosen_options"] == ["Reject"]
    assert detail["responded_by_user"] == {"id": "alertmanager", "name": why}
    assert f"{APPROVAL} cancelled: the alert resolved at 2026-11-30T05:10:00+00:00" in note
    report, markdown = postmortem(airflow, run_id)
    terminate = {a["step"]: a for a in report["actions"]}["terminate-idle"]
    assert (terminate["result"], terminate["approved_by"]) == ("skipped", None)
    assert terminate["detail"] == f"rejected by {why} (Reject): nothing changed"
    assert report["figures"]["changed"] == []
    assert f"| not approved | rejected by {why} (Reject): nothing changed" in markdown

"""While a stage's approval waits, the canary is still judged: on a real ``airflow standalone``.

Scheduler, triggerer and API server as in production: the approval task waits *deferred*
on the approval trigger (not parked in ``awaiting_input``), a person's answer goes through
the REST API (``PATCH .../hitlDetails``), and a canary that goes bad meanwhile has its
traffic taken off by the trigger, fails the approval and is rolled back. demo-api here:
25 % for 8 s, then an approval before 50 %, then 100 %.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.standalone_run import standalone_airflow
from support.waiting import wait_for

from opsdag.airflow_api import AirflowClient, Credentials

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
DAG = "release__demo-api"
APPROVAL = "canary.stage_50.approval"
STEPS = [
    {"weight": 25, "bake": "8s"},
    {"weight": 50, "bake": "5s", "approval": True},
    {"weight": 100, "bake": "5s"},
]


@pytest.fixture(scope="module")
def airflow(sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Credentials, Path]]:
    """``airflow standalone`` with its own state, on a copy of include/ whose canary asks for approval."""
    include = tmp_path_factory.mktemp("include")
    shutil.copytree(ROOT / "include", include, dirs_exist_ok=True)
    spec_path = include / "services" / "demo-api.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["canary"]["steps"] = STEPS
    for metric in spec["analysis"]["metrics"]:
        metric["interval"] = "2s"
    spec["notifications"] = {}
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    state = tmp_path_factory.mktemp("approval-state")
    settings = {
        "OPSDAG_STATE_DIR": str(state),
        "OPSDAG_INCLUDE_DIR": str(include),
        "OPSDAG_SANDBOX_DIR": str(sandbox.root),
        "OPSDAG_REPORTS_DIR": str(state / "reports"),
    }
    with standalone_airflow(settings) as credentials:
        with AirflowClient(credentials) as client:
            client.unpause(DAG)
        yield credentials, state / "reports"


def states(client: AirflowClient, run_id: str) -> dict[str, str | None]:
    return {t["task_id"]: t["state"] for t in client.task_instances(DAG, run_id)}


def waiting_for_approval(client: AirflowClient, run_id: str) -> dict[str, Any]:
    """Once the approval is asked for and its task waits: its HITL detail (pending)."""

    def asked() -> dict[str, Any] | None:
        if states(client, run_id).get(APPROVAL) in ("success", "failed", "skipped", "upstream_failed"):
            raise AssertionError(f"{APPROVAL} ended before anyone answered: {states(client, run_id)}")
        details = client.request("GET", f"/dags/{DAG}/dagRuns/{run_id}/hitlDetails").get("hitl_details", [])
        pending = [d for d in details if not d.get("response_received")]
        return pending[0] if pending and states(client, run_id).get(APPROVAL) == "deferred" else None

    return wait_for(asked, 240, interval=1, what=f"{APPROVAL} waiting, deferred, for an answer")


def ended(client: AirflowClient, run_id: str, timeout: float = 240) -> dict[str, Any]:
    return wait_for(
        lambda: (r := client.dag_run(DAG, run_id))["state"] in ("success", "failed") and r,
        timeout,
        interval=1,
        what="the release run's end",
    )


def test_canary_that_stops_answering_during_the_approval_wait_is_aborted(airflow, sandbox) -> None:
    credentials, _ = airflow
    sandbox.reset()
    with AirflowClient(credentials) as client:
        run_id = client.trigger(DAG, {"image": sandbox.image("1.1.0"), "reason": "approval e2e"})[
            "dag_run_id"
        ]
        waiting_for_approval(client, run_id)
        assert sandbox.status()["canary_weight"] == 25  # judged at the previous stage's weight
        groups = [inst["pid"] for inst in sandbox.state()["fleet"]["canary"]["instances"]]
        stopped_at = time.time()
        for pid in groups:
            os.killpg(pid, signal.SIGSTOP)  # the canary hangs: alive, answering nothing
        try:
            wait_for(
                lambda: states(client, run_id).get(APPROVAL) == "failed",
                60,
                interval=0.5,
                what="approval failed",
            )
        finally:
            for pid in groups:
                with_stopped_group_resumed(pid)
        run = ended(client, run_id)
        final = states(client, run_id)
        verdict = client.xcom(DAG, run_id, APPROVAL, key="verdict")
        rollback = client.xcom(DAG, run_id, "rollback", key="rollback")

    assert run["state"] == "failed"
    assert final["canary.stage_50.set_weight"] in ("skipped", "upstream_failed"), final
    assert final["rollback"] == "success" and rollback["problems"] == [], (final, rollback)
    report = release_report(airflow[1], run_id)
    assert report["status"] == "rolled_back"
    assert "waiting for approval" in report["summary"], report["summary"]
    assert verdict["source"] == "analysis" and verdict["phase"] == "fail", verdict
    assert "availability" in verdict["reason"], verdict["reason"]
    abort = verdict["abort"]
    assert abort["error"] is None, abort
    assert abort["split_after"]["requested"] == 0
    print(
        f"\nstandalone approval wait: canary stopped -> verdict {verdict['decided_at'] - stopped_at:.1f} s; "
        f"decided_at -> weight 0 at HAProxy {abort['done_at'] - verdict['decided_at']:.3f} s"
    )
    status = sandbox.status()
    assert (status["stable"]["version"], status["canary"], status["canary_weight"]) == ("1.0.0", None, 0)


def release_report(reports: Path, run_id: str) -> dict[str, Any]:
    """The release report the run wrote (its JSON)."""
    import json

    def written() -> dict[str, Any] | None:
        for path in sorted((reports / DAG).glob("*.json")):
            data = json.loads(path.read_text())
            if data.get("run_id") == run_id:
                return data
        return None

    return wait_for(written, 30, what=f"the report of {run_id}")


def with_stopped_group_resumed(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the rollback already removed it
        os.killpg(pgid, signal.SIGCONT)


def test_rejection_through_the_rest_api_reaches_the_deferred_approval(airflow, sandbox) -> None:
    credentials, _ = airflow
    sandbox.reset()
    with AirflowClient(credentials) as client:
        run_id = client.trigger(DAG, {"image": sandbox.image("1.1.0"), "reason": "approval e2e"})[
            "dag_run_id"
        ]
        waiting_for_approval(client, run_id)
        answered_at = time.time()
        client.request(
            "PATCH",
            f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/{APPROVAL}/-1/hitlDetails",
            json={"chosen_options": ["Reject"], "params_input": {}},
        )
        wait_for(lambda: states(client, run_id).get(APPROVAL) == "failed", 60, interval=0.5, what="rejected")
        failed_after = time.time() - answered_at
        run = ended(client, run_id)
        error = client.xcom(DAG, run_id, APPROVAL, key="error")
        verdict = client.xcom(DAG, run_id, APPROVAL, key="verdict")

    assert run["state"] == "failed"
    report = release_report(airflow[1], run_id)
    assert report["status"] == "rolled_back"
    # The failing step is the approval. On standalone the task's own record of the rejection is
    # not always there (the REST route can end the deferred task itself): then the report says
    # the step failed without recording an error, which names the step but not "Reject".
    assert report["failure"]["task_id"] == APPROVAL, report["summary"]
    assert error in (None, 'HITLRejectException: Receive "Reject"')
    assert verdict is None  # the canary was healthy: the person's answer decided
    print(f"\nstandalone: Reject sent -> approval failed in {failed_after:.1f} s")
    status = sandbox.status()
    assert (status["stable"]["version"], status["canary"], status["canary_weight"]) == ("1.0.0", None, 0)

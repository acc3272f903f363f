"""A stage's approval with the canary watched meanwhile: the operator, run by Airflow, on the sandbox.

``dag.test()`` runs the approval task for real against a SQLite metadata database: it
records the HITL request through Airflow's execution API, defers, and runs the trigger
inline (Airflow's own HITL response reader, through the same API). A person's answer is
recorded with the REST API's own route function (``PATCH .../hitlDetails``), as the UI
does. What ``dag.test()`` cannot show, a scheduler resuming the deferred task, is checked
on the route itself: a response to a *deferred* HITL task schedules it with the answer.
"""

from __future__ import annotations

import json
import runpy
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.airflow_home import airflow_home, migrate
from support.waiting import wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
WEIGHT = 25

APPROVAL_DAG = """
from datetime import UTC, datetime, timedelta

import yaml
from airflow.sdk import DAG, task

from opsdag.operators.stage_approval import StageApprovalOperator
from opsdag.spec.service import ServiceSpec

data = yaml.safe_load(open({spec_path!r}).read())
for metric in data["analysis"]["metrics"]:
    metric["interval"] = "1s"
    metric["initial_delay"] = "2s"
SPEC = ServiceSpec.model_validate(data)

with DAG(
    "approval_watch",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    render_template_as_native_obj=True,
) as approval_watch:
    approval = StageApprovalOperator(
        task_id="approval",
        service=SPEC,
        subject="send 50 % of the traffic to the canary?",
        body="Approve to continue; reject to roll back.",
        current_weight={weight},
        selectors="{{{{ dag_run.conf['selectors'] }}}}",
        abort_action="weight_zero",
        response_timeout=timedelta(minutes=2),
    )

    @task(trigger_rule="all_done")
    def report(ti=None):
        return {{
            "verdict": ti.xcom_pull(task_ids="approval", key="verdict"),
            "error": ti.xcom_pull(task_ids="approval", key="error"),
        }}

    approval >> report()
"""


@pytest.fixture(scope="module")
def approval_dag(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    template = migrate(tmp_path_factory.mktemp("airflow-template"))
    source = APPROVAL_DAG.format(
        spec_path=str(ROOT / "include" / "services" / "demo-api.yaml"), weight=WEIGHT
    )
    with airflow_home(tmp_path_factory.mktemp("airflow-home"), template, {"approval_dag.py": source}) as home:
        yield runpy.run_path(str(home / "dags" / "approval_dag.py"))["approval_watch"]


@pytest.fixture
def fleet(sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    connections = json.loads((sandbox.root / "connections.json").read_text())
    monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS_DEFAULT", json.dumps(connections["prometheus_default"]))
    sandbox.reset()
    yield sandbox
    sandbox.reset()


def spec_of(dag: Any) -> Any:
    return dag.get_task("approval").service


def canary_at(sandbox, spec, tag: str, weight: int) -> dict[str, str]:
    """``tag`` as the canary at ``weight`` %, with every metric in Prometheus (as after a stage)."""
    from opsdag.analysis.query import render_query
    from opsdag.hooks.prometheus import PrometheusHook
    from opsdag.platforms.registry import driver_for, router_for

    driver, router = driver_for(spec), router_for(spec)
    driver.start(sandbox.image(tag), spec.platform.instances)
    wait_for(lambda: driver.readiness().ready, 30, what=f"canary {tag} ready")
    router.set_weight(weight)
    selectors = driver.metric_selectors()
    queries = [render_query(m.query, selectors) for m in spec.analysis.metrics]
    hook = PrometheusHook()
    wait_for(
        lambda: all(hook.query(q) is not None for q in queries), 30, interval=0.5, what=f"{tag}'s metrics"
    )
    return selectors


def run_dag(dag: Any, conf: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any], float]:
    """``dag.test()``: the task states, what ``report`` returned, and the seconds it took."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    started = time.monotonic()
    dagrun = dag.test(run_conf=conf)
    elapsed = time.monotonic() - started
    states = {ti.task_id: str(ti.state) for ti in dagrun.get_task_instances()}
    with create_session() as session:
        rows = session.scalars(
            XComModel.get_many(run_id=dagrun.run_id, dag_ids=dag.dag_id, task_ids="report")
        ).all()
        report = next(XComModel.deserialize_value(r) for r in rows if r.key == "return_value")
    return states, report, elapsed


def answer_when_asked(dag_id: str, option: str) -> threading.Thread:
    """In the background: once the approval is asked for, answer it through the REST API's route."""
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
    from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.sdk.timezone import utcnow
    from airflow.utils.session import create_session
    from sqlalchemy import select

    asked_after = utcnow()

    def pending_run_id() -> str | None:
        with create_session() as session:
            return session.scalar(
                select(TaskInstance.run_id)
                .join(HITLDetail, HITLDetail.ti_id == TaskInstance.id)
                .where(
                    TaskInstance.dag_id == dag_id,
                    HITLDetail.created_at >= asked_after,
                    HITLDetail.responded_at.is_(None),
                )
            )

    def answer() -> None:
        run_id = wait_for(pending_run_id, 60, interval=0.5, what="the approval request")
        with create_session() as session:
            update_hitl_detail(
                dag_id=dag_id,
                dag_run_id=run_id,
                task_id="approval",
                update_hitl_detail_payload=UpdateHITLDetailPayload(chosen_options=[option]),
                user=SimpleAuthManagerUser(username="alice", role="admin"),
                session=session,
            )

    worker = threading.Thread(target=answer, daemon=True)
    worker.start()
    return worker


def test_fault_while_the_approval_waits_aborts_and_fails_the_approval(
    approval_dag, fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    from support.slack_server import SlackRecorder

    from opsdag.platforms.registry import router_for

    spec = spec_of(approval_dag)
    selectors = canary_at(fleet, spec, "1.2.0-errors", WEIGHT)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.example:8080")
    with SlackRecorder() as slack:
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_DEFAULT", slack.connection_json())
        states, report, elapsed = run_dag(approval_dag, {"selectors": selectors})
        [request] = slack.wait_for(1)

    # People were asked, with the link to the approval page, before the canary was watched.
    assert request["text"] == "Approval needed: send 50 % of the traffic to the canary?"
    link = "http://airflow.example:8080/dags/approval_watch/runs/"
    assert link in json.dumps(request["blocks"]) and "/tasks/approval/required_actions" in json.dumps(
        request["blocks"]
    )

    assert states == {"approval": "failed", "report": "success"}
    assert elapsed < 60  # not the 2 min response timeout
    verdict = report["verdict"]
    assert (verdict["source"], verdict["phase"], verdict["weight"]) == ("analysis", "fail", WEIGHT)
    assert verdict["abort"]["error"] is None
    assert verdict["abort"]["split_after"]["canary"] == 0
    assert report["error"].startswith(
        f"AirflowFailException: the canary failed while waiting for approval at {WEIGHT} %: error-rate "
    )
    assert router_for(spec).verify_weight().canary == 0
    to_safety = verdict["abort"]["done_at"] - verdict["decided_at"]
    print(f"\napproval (dag.test): decided_at -> weight 0: {to_safety:.3f} s")


def test_rejection_while_the_canary_is_healthy_fails_the_approval_without_abort(approval_dag, fleet) -> None:
    from opsdag.platforms.registry import router_for

    spec = spec_of(approval_dag)
    selectors = canary_at(fleet, spec, "1.1.0", WEIGHT)
    answering = answer_when_asked(approval_dag.dag_id, "Reject")
    states, report, _ = run_dag(approval_dag, {"selectors": selectors})
    answering.join(timeout=10)

    assert states == {"approval": "failed", "report": "success"}
    assert report["verdict"] is None  # the canary was not what failed
    assert report["error"] == 'HITLRejectException: Receive "Reject"'
    assert router_for(spec).verify_weight().canary == pytest.approx(WEIGHT, abs=1)  # the rollback's job


def test_approval_while_the_canary_is_healthy_lets_the_release_go_on(approval_dag, fleet) -> None:
    from opsdag.platforms.registry import router_for

    spec = spec_of(approval_dag)
    selectors = canary_at(fleet, spec, "1.1.0", WEIGHT)
    answering = answer_when_asked(approval_dag.dag_id, "Approve")
    states, report, _ = run_dag(approval_dag, {"selectors": selectors})
    answering.join(timeout=10)

    assert states == {"approval": "success", "report": "success"}
    assert report == {"verdict": None, "error": None}
    assert router_for(spec).verify_weight().canary == pytest.approx(WEIGHT, abs=1)


def test_a_response_through_the_rest_api_resumes_a_deferred_approval_at_once(approval_dag, fleet) -> None:
    """What the scheduler and triggerer path relies on (dag.test runs the trigger inline instead)."""
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
    from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.sdk.serde import deserialize
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    spec = spec_of(approval_dag)
    selectors = canary_at(fleet, spec, "1.2.0-errors", WEIGHT)
    run_dag(approval_dag, {"selectors": selectors})  # a run whose approval has its HITL request
    with create_session() as session:
        ti = session.scalars(
            select(TaskInstance)
            .where(TaskInstance.dag_id == approval_dag.dag_id, TaskInstance.task_id == "approval")
            .order_by(TaskInstance.start_date.desc())
        ).first()
        # Put it back as the triggerer path leaves it: deferred, its request unanswered.
        ti.state = TaskInstanceState.DEFERRED
        ti.next_method = "execute_complete"
        ti.next_kwargs = {}
        detail = session.get(HITLDetail, ti.id)
        detail.responded_at = None
        detail.responded_by = None
        detail.chosen_options = None
        run_id = ti.run_id
    with create_session() as session:
        update_hitl_detail(
            dag_id=approval_dag.dag_id,
            dag_run_id=run_id,
            task_id="approval",
            update_hitl_detail_payload=UpdateHITLDetailPayload(chosen_options=["Approve"]),
            user=SimpleAuthManagerUser(username="alice", role="admin"),
            session=session,
        )
    with create_session() as session:
        ti = session.scalars(
            select(TaskInstance).where(TaskInstance.run_id == run_id, TaskInstance.task_id == "approval")
        ).one()
        assert ti.state == TaskInstanceState.SCHEDULED  # resumed: the scheduler runs execute_complete
        assert ti.trigger_id is None  # the triggerer drops our trigger
        event = deserialize(ti.next_kwargs)["event"]
    assert event["chosen_options"] == ["Approve"]
    assert event["responded_by_user"]["name"] == "alice"

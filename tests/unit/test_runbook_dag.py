"""The shape of ``runbook__<name>``: each step a task in order, approvals before destructive steps."""

from __future__ import annotations

from pathlib import Path

import yaml

from opsdag.factory.runbook_dag import runbook_dag
from opsdag.spec.runbook import RunbookSpec

INCLUDE = Path(__file__).resolve().parents[2] / "include"


def load(name: str, **guards) -> RunbookSpec:
    data = yaml.safe_load((INCLUDE / "runbooks" / f"{name}.yaml").read_text())
    data["guards"] = {**data.get("guards", {}), **guards}
    return RunbookSpec.model_validate(data)


def chain(dag) -> list[str]:
    """Task ids from ``plan`` down, following the single downstream of each."""
    task, order = dag.get_task("plan"), []
    while task is not None:
        order.append(task.task_id)
        task = next(iter(task.downstream_list), None)
    return order


def test_db_connections_runs_its_steps_in_order_with_an_approval_before_terminating() -> None:
    dag = runbook_dag(load("db-connections"))
    assert dag.dag_id == "runbook__db-connections"
    assert chain(dag) == [
        "plan",
        "diagnose-connections",
        "approve_terminate-idle",
        "terminate-idle",
        "verify-connections",
        "tell-owners",
        "postmortem",
    ]
    assert dag.get_task("postmortem").trigger_rule == "all_done"
    assert dag.get_task("terminate-idle").approval_task_id == "approve_terminate-idle"
    approval = dag.get_task("approve_terminate-idle")
    assert approval.options == ["Approve", "Reject"] and approval.defaults == ["Reject"]
    assert dag.params["dry_run"] is True and dag.max_active_runs == 1


def test_without_the_approval_guard_the_destructive_step_follows_the_diagnostics() -> None:
    dag = runbook_dag(load("db-connections", approval_for_destructive=False))
    assert chain(dag)[1:4] == ["diagnose-connections", "terminate-idle", "verify-connections"]
    assert dag.get_task("terminate-idle").approval_task_id is None


def test_canary_errors_confirms_then_tells() -> None:
    assert chain(runbook_dag(load("canary-errors"))) == [
        "plan",
        "confirm-errors",
        "tell-release-owners",
        "postmortem",
    ]


def test_service_runbooks_act_after_an_approval_and_escalate_whatever_happened_before() -> None:
    high = runbook_dag(load("high-error-rate"))
    assert chain(high) == [
        "plan",
        "diagnose-service",
        "snapshot",
        "confirm-errors",
        "assess-impact",
        "approve_roll-back-last-release",
        "roll-back-last-release",
        "verify-error-rate",
        "tell-owners",
        "escalate",
        "postmortem",
    ]
    assert high.get_task("roll-back-last-release").approval_task_id == "approve_roll-back-last-release"
    down = runbook_dag(load("service-down", approval_for_destructive=False))
    assert chain(down) == [
        "plan",
        "diagnose-service",
        "snapshot",
        "confirm-down",
        "restart-instances",
        "verify-instances-up",
        "escalate",
        "postmortem",
    ]
    escalate = down.get_task("escalate")
    assert escalate.trigger_rule == "all_done"
    assert (escalate.options, escalate.defaults) == (["Acknowledged", "Taking over"], ["Acknowledged"])
    assert escalate.earlier == [
        "diagnose-service",
        "snapshot",
        "confirm-down",
        "restart-instances",
        "verify-instances-up",
    ]

"""``runbook__<runbook>``: the runbook's steps, one task each, in order, behind its guards.

Shape only: ``plan`` (what the run will do), then each step (task id: its name or
``<n>-<action>``), a destructive one preceded by its approval when the guards ask for
one, an ``escalate`` step running whatever happened before it (it decides
itself whether to call people), then ``postmortem`` (trigger rule ``all_done``) from what the steps recorded.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from opsdag.operators.runbook_approval import RunbookApprovalOperator
from opsdag.operators.runbook_assess import AssessOperator
from opsdag.operators.runbook_database import PgConnectionsOperator, TerminateIdleConnectionsOperator
from opsdag.operators.runbook_escalate import EscalateOperator
from opsdag.operators.runbook_plan import RunbookPlanOperator
from opsdag.operators.runbook_postmortem import RunbookPostmortemOperator
from opsdag.operators.runbook_service import (
    DrainCanaryOperator,
    HealthGateOperator,
    MetricSnapshotOperator,
    RestartInstancesOperator,
    RollbackReleaseOperator,
    ScaleServiceOperator,
    ServiceStatusOperator,
)
from opsdag.operators.runbook_steps import CheckMetricOperator, NotifyOperator, WaitOperator
from opsdag.runbooks.engine import approval_task_id
from opsdag.spec.runbook import RunbookSpec, step_id

STEP_OPERATORS = {
    "check_metric": CheckMetricOperator,
    "notify": NotifyOperator,
    "wait": WaitOperator,
    "pg_connections": PgConnectionsOperator,
    "terminate_idle_connections": TerminateIdleConnectionsOperator,
    "rollback_release": RollbackReleaseOperator,
    "restart_instances": RestartInstancesOperator,
    "escalate": EscalateOperator,
    "service_status": ServiceStatusOperator,
    "scale": ScaleServiceOperator,
    "metric_snapshot": MetricSnapshotOperator,
    "assess": AssessOperator,
    "drain_canary": DrainCanaryOperator,
    "health_gate": HealthGateOperator,
}


def runbook_dag(spec: RunbookSpec) -> DAG:
    started_by = ", ".join(str(alert) for alert in spec.alerts)
    with DAG(
        dag_id=f"runbook__{spec.name}",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        params={
            "alert": Param(
                {},
                type="object",
                title="Alert",
                description="The alert that started the runbook (name, labels, annotations, startsAt).",
            ),
            "dry_run": Param(
                spec.guards.dry_run,
                type="boolean",
                title="Dry run",
                description="Destructive steps only plan; diagnostics and checks still run.",
            ),
        },
        tags=["opsdag", "runbook"],
        doc_md=f"### Runbook `{spec.name}`\n\n{spec.description}\n\nStarted by: {started_by}",
        default_args={"owner": ",".join(spec.owners) or "opsdag", "retries": 0},
    ) as dag:
        previous = RunbookPlanOperator(task_id="plan", runbook=spec)
        for i, step in enumerate(spec.steps):
            sid = step_id(i, step)
            kwargs = {}
            if step.destructive and spec.guards.approval_for_destructive:
                approval = RunbookApprovalOperator(
                    task_id=approval_task_id(sid),
                    runbook=spec,
                    step_id=sid,
                    subject=f"Runbook {spec.name}: approve {sid} ({step.action})?",
                    body=f"`{step.action}` with {step.model_dump_json(exclude_none=True)}",
                )
                previous >> approval
                previous = approval
                kwargs["approval_task_id"] = approval.task_id
            task = STEP_OPERATORS[step.action](runbook=spec, index=i, **kwargs)
            previous >> task
            previous = task
        postmortem = RunbookPostmortemOperator(task_id="postmortem", runbook=spec, trigger_rule="all_done")
        previous >> postmortem
    return dag

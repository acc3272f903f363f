"""``runbook__<runbook>``: the steps a runbook would take for an alert, behind its guards."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from opsdag.operators.runbook_plan import RunbookPlanOperator
from opsdag.spec.runbook import RunbookSpec


def runbook_dag(spec: RunbookSpec) -> DAG:
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
                description="The alert that started the runbook (name, labels, annotations).",
            ),
            "dry_run": Param(
                spec.guards.dry_run,
                type="boolean",
                title="Dry run",
                description="Plan and report only; change nothing.",
            ),
        },
        tags=["opsdag", "runbook"],
        doc_md=f"### Runbook `{spec.name}`\n\n{spec.description}\n\nStarted by: {', '.join(spec.alerts)}",
        default_args={"owner": ",".join(spec.owners) or "opsdag", "retries": 0},
    ) as dag:
        RunbookPlanOperator(task_id="plan", runbook=spec)
    return dag

"""The PostgreSQL steps of a runbook: connections by state, and ending the idle ones behind the guards.

The connection is resolved at run time (``BaseHook.get_connection``), never at DAG parse,
and opened the project's way (``opsdag.backups.pg.target_from_connection``): the password
reaches libpq in process only. The work is :mod:`opsdag.runbooks.pg_steps`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import BaseHook

from opsdag.operators.runbook_steps import RunbookStepOperator, StepFailed, StopRunbook
from opsdag.runbooks.engine import approval_decision


class _PgStepOperator(RunbookStepOperator):
    def connect(self, context: Any) -> Any:
        """The step's server; a run for an alert about another database stops the runbook."""
        from opsdag.backups.pg import target_from_connection
        from opsdag.runbooks.pg_steps import server_of

        service = ((context["params"].get("alert") or {}).get("labels") or {}).get("service")
        if self.step.database and service and service != self.step.database:
            raise StopRunbook(
                f"the alert is about {service!r}; this runbook acts on {self.step.database!r}: nothing done"
            )
        conn_id, dbname = server_of(self.step)
        return target_from_connection(BaseHook.get_connection(conn_id), dbname).connect()


class PgConnectionsOperator(_PgStepOperator):
    """``pg_connections``: the server's connections by state, per database and user (changes nothing)."""

    def perform(self, context: Any, started: datetime) -> tuple[Any, ...]:
        from opsdag.runbooks.pg_steps import diagnose, snapshot_detail

        with self.connect(context) as conn:
            snapshot = diagnose(conn)
        return "done", snapshot_detail(snapshot), {"connections": snapshot.to_dict()}


class TerminateIdleConnectionsOperator(_PgStepOperator):
    """``terminate_idle_connections``: destructive; plans only in a dry run, acts only once approved.

    :param approval_task_id: the approval task before this one (None: no approval asked).
    """

    def __init__(self, *, approval_task_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.approval_task_id = approval_task_id

    def perform(self, context: Any, started: datetime) -> tuple[Any, ...]:
        from opsdag.runbooks.pg_steps import terminate_idle

        answer = context["ti"].xcom_pull(task_ids=self.approval_task_id) if self.approval_task_id else None
        needs = self.approval_task_id is not None
        decision = approval_decision(dry_run=self.dry_run(context), needs_approval=needs, answer=answer)
        approval = {"needs_approval": needs, "approved_by": decision.approved_by}
        if decision.mode == "skip":
            return "skipped", decision.reason, {}, approval
        with self.connect(context) as conn:
            outcome = terminate_idle(conn, self.step, dry_run=decision.mode == "plan")
        data = {"termination": outcome.to_dict()}
        if decision.mode == "plan":
            pids = ", ".join(str(p) for p in outcome.pids("planned")) or "none"
            return "planned", f"{outcome.summary()} (pids: {pids})", data, approval
        failed = outcome.pids("failed")
        if failed:
            raise StepFailed(f"{outcome.summary()}; failed pids: {', '.join(map(str, failed))}")
        return "done", f"{outcome.summary()} ({decision.reason})", data, approval

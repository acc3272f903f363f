"""What backup and drill operators share: the database spec, its connections and its store.

Operators here are thin: they resolve connections at run time (never at DAG parse), call
``opsdag.backups``, push a small XCom, and log. An operator that fails records why in
the XCom ``error`` so that the run's report and notification can say it.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook, BaseOperator

from opsdag.backups.engine import BackupOptions, backup_id_for
from opsdag.backups.pg import PgTarget, target_from_connection
from opsdag.backups.storage import BackupStore
from opsdag.spec.database import DatabaseSpec


class DatabaseOperator(BaseOperator):
    """Base of the backup and drill operators.

    :param database: the database's spec (include/databases/<name>.yaml).
    """

    ui_color = "#e3f0e3"

    def __init__(self, *, database: DatabaseSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.database = database

    # -- run-time resources ---------------------------------------------------------

    def source(self) -> PgTarget:
        conn = BaseHook.get_connection(self.database.connection_id)
        return target_from_connection(conn, self.database.database)

    def store(self) -> BackupStore:
        return BackupStore(self.database.backup.storage, self.database.backup.storage_conn_id)

    def options(self) -> BackupOptions:
        backup = self.database.backup
        return BackupOptions(
            method=backup.method,
            jobs=backup.jobs,
            compression=backup.compression,
            level=backup.compression_level,
            table_checksums=backup.table_checksums,
            timeout=backup.timeout.total_seconds() if backup.timeout else None,
        )

    @staticmethod
    def backup_id(context: Any) -> str:
        """The id of this run's backup: the same in every task and every retry of the run."""
        dag_run = context["dag_run"]
        return backup_id_for(dag_run.run_after, dag_run.run_id)

    # -- execution ------------------------------------------------------------------

    def execute(self, context: Any) -> Any:
        try:
            return self.run(context)
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}".strip()
            try:
                context["ti"].xcom_push(key="error", value=message[:2000])
            except Exception:  # the original failure matters more than its record
                self.log.warning("could not record the failure in XCom")
            raise

    def run(self, context: Any) -> Any:
        raise NotImplementedError


def task_states(context: Any, task_ids: list[str]) -> dict[str, str]:
    """States of other tasks of this run, through the Task SDK ({} where that is unavailable)."""
    ti = context["ti"]
    try:
        states = ti.get_task_states(dag_id=ti.dag_id, task_ids=task_ids, run_ids=[ti.run_id])
    except Exception:
        return {}
    run_states = states.get(ti.run_id, states) if isinstance(states, dict) else {}
    return {k: str(v) for k, v in run_states.items() if v is not None}


def first_failure(context: Any, task_ids: list[str]) -> tuple[str | None, str | None]:
    """(task id, error) of the first task of ``task_ids`` (in run order) that failed in this run.

    A task's own record (XCom ``error``) says why; without it (a killed worker), the task
    state says that it failed, or, where states are unavailable, a missing result does.
    """
    ti = context["ti"]
    states = task_states(context, task_ids)
    for task_id in task_ids:
        error = ti.xcom_pull(task_ids=task_id, key="error")
        if error:
            return task_id, error
        if states:
            if states.get(task_id) == "failed":
                return task_id, "the task failed (see its log)"
        elif ti.xcom_pull(task_ids=task_id) is None:
            return task_id, "the task did not complete"
    return None, None


def slack_conn_id(database: DatabaseSpec) -> str | None:
    """The spec's Slack connection, else ``slack_default`` when that connection exists."""
    if database.notifications.slack_conn_id:
        return database.notifications.slack_conn_id
    try:
        BaseHook.get_connection("slack_default")
    except Exception:
        return None
    return "slack_default"

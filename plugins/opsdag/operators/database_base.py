"""The base of the backup and drill operators: the database spec, its connections and its store.

Operators here are thin: they resolve connections at run time (never at DAG parse), call
``opsdag.backups``, push a small XCom, and log. An operator that fails records why in
the XCom ``error`` (``run_state.RecordsItsError``), so that the run's report and
notification can say it.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook, BaseOperator

from opsdag.backups.engine import BackupOptions, backup_id_for
from opsdag.backups.pg import PgTarget, target_from_connection
from opsdag.backups.storage import BackupStore
from opsdag.operators.run_state import RecordsItsError
from opsdag.spec.database import DatabaseSpec


class DatabaseOperator(RecordsItsError, BaseOperator):
    """Base of the backup and drill operators; subclasses implement ``run(context)``.

    :param database: the database's spec (include/databases/<name>.yaml).
    """

    ui_color = "#e3f0e3"

    def __init__(self, *, database: DatabaseSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.database = database

    def source(self) -> PgTarget:
        """The database to back up, from its Airflow connection."""
        conn = BaseHook.get_connection(self.database.connection_id)
        return target_from_connection(conn, self.database.database)

    def store(self) -> BackupStore:
        """Where the database's backups live."""
        return BackupStore(self.database.backup.storage, self.database.backup.storage_conn_id)

    def options(self) -> BackupOptions:
        """The spec's backup settings for the engine."""
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

    def publish_report(self, context: Any, report: Any, written: Any) -> dict[str, Any]:
        """Log a written backup or drill report, make its summary the run's note, return its XCom."""
        from opsdag.reports.run_note import set_run_note

        dag_run = context["dag_run"]
        self.log.info("%s", report.summary)
        self.log.info("report written to %s and %s", written.markdown, written.json)
        note = set_run_note(dag_run.dag_id, dag_run.run_id, report.summary, log=self.log)
        return {
            **report.to_json(),
            "markdown": str(written.markdown),
            "json": str(written.json),
            "note_set": note,
        }


def slack_conn_id(database: DatabaseSpec) -> str | None:
    """The spec's Slack connection, else ``slack_default`` when that connection exists."""
    if database.notifications.slack_conn_id:
        return database.notifications.slack_conn_id
    try:
        BaseHook.get_connection("slack_default")
    except Exception:
        return None
    return "slack_default"

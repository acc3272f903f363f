"""Operators of the backup DAG: preflight -> backup -> manifest -> verify -> [wal_continuity] ->
retention -> publish -> report -> notify (``wal_continuity`` when the spec archives WAL).

Each is idempotent for its run (the backup id comes from the run, see
``DatabaseOperator.backup_id``): a retried backup replaces its own partial dump, a
published backup is never dumped again, the manifest is written once, retention
converges, and publishing twice announces the same backup (its id in the event's extra,
which tells the drill what to restore). ``report`` and ``notify`` run whatever happened
before them; only ``notify`` fails, and only when the backup did, so that the run's state
is the backup's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowFailException

from opsdag.backups import engine
from opsdag.backups.retention import RetentionPolicy
from opsdag.operators.database_base import DatabaseOperator, slack_conn_id
from opsdag.operators.run_state import ERROR_KEY, first_failure, task_states
from opsdag.reports.backup_record import BackupReport
from opsdag.reports.backup_report import WAL_STEP, backup_steps, build_backup_report
from opsdag.spec.run_conf import BackupConf, ConfRefused, check_conf


def backup_asset(database: str) -> Asset:
    """The Asset a backup DAG updates when it has published a verified backup of ``database``.

    An ``x-`` scheme, Airflow's convention for private ones: other schemes make every task
    process load every provider's URI normalizer first (the amazon provider's imports boto3:
    0.13-0.25 s of each backup and drill task here). Its name changed with its URI
    (``opsdag-backup-<db>`` had ``opsdag://backups/<db>``): an asset keeping its name under a
    new URI stays inactive, and fails the publishing task, until Airflow cleans the old one up.
    """
    uri = f"x-opsdag://backups/{database}"
    return Asset(name=f"opsdag-backups-{database}", uri=uri, group="opsdag-backups")


class BackupPreflightOperator(DatabaseOperator):
    """Server reachable, its version, client tools able to back it up, room at the destination."""

    def run(self, context: Any) -> dict[str, Any]:
        try:  # the run conf whole, before anything is read or written: unknown keys named
            check_conf(BackupConf, context["dag_run"].conf, context["dag_run"].dag_id)
        except ConfRefused as exc:
            raise AirflowFailException(str(exc)) from exc
        try:
            result = engine.preflight(self.source(), self.store(), self.database.name, self.options())
        except engine.BackupError as exc:
            raise AirflowFailException(str(exc)) from exc
        self.log.info("preflight: %s", result)
        return result


class PgBackupOperator(DatabaseOperator):
    """Dump (pg_dump) or base-backup (pg_basebackup) into the backup's partial directory."""

    ui_color = "#c9e4c9"

    def run(self, context: Any) -> dict[str, Any]:
        backup_id = self.backup_id(context)
        run = {"dag_id": context["dag_run"].dag_id, "run_id": context["dag_run"].run_id}
        result = engine.take_backup(
            self.source(),
            self.store(),
            self.database.name,
            backup_id,
            self.options(),
            run=run,
            logger=self.log,
        )
        self.log.info("backup %s: %s", backup_id, result)
        return result


class BackupManifestOperator(DatabaseOperator):
    """Hash every file and write the manifest last: from then on the backup exists."""

    def run(self, context: Any) -> dict[str, Any]:
        backup_id = self.backup_id(context)
        store = self.store()
        manifest = engine.publish_manifest(store, self.database.name, backup_id)
        result = {
            "backup_id": manifest.id,
            "location": store.location(self.database.name, manifest.id),
            "files": len(manifest.files),
            "bytes": manifest.bytes,
            "tables": len(manifest.tables),
            "consistent_at": manifest.consistent_at.isoformat(),
        }
        self.log.info("manifest written: %s", result)
        return result


class VerifyBackupOperator(DatabaseOperator):
    """Re-read every file from storage against the manifest; ``pg_restore --list`` or ``pg_verifybackup``."""

    def run(self, context: Any) -> dict[str, Any]:
        backup_id = self.backup_id(context)
        result = engine.verify(self.store(), self.database.name, backup_id, logger=self.log)
        if result["status"] != "verified":
            context["ti"].xcom_push(key="verification", value=result)
            raise AirflowFailException(f"backup {backup_id} is bad: " + "; ".join(result["problems"]))
        self.log.info("backup %s verified: %s", backup_id, result["contents"])
        return result


class BackupRetentionOperator(DatabaseOperator):
    """Prune old backups by the spec's retention policy (or only list them in a dry run).

    :param dry_run: list what would be deleted; ``None`` reads the run's ``dry_run_retention`` param.
    """

    def __init__(self, *, dry_run: bool | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dry_run = dry_run

    def run(self, context: Any) -> dict[str, Any]:
        dry_run = (
            self.dry_run if self.dry_run is not None else bool(context["params"].get("dry_run_retention"))
        )
        r = self.database.retention
        policy = RetentionPolicy(r.keep_last, r.daily, r.weekly, r.monthly)
        store = self.store()
        result = engine.apply_retention(
            store, self.database.name, policy, now=datetime.now(UTC), dry_run=dry_run, logger=self.log
        )
        if self.database.backup.wal_archive.enabled:
            from opsdag.backups.wal_retention import apply_wal_retention

            result["wal"] = apply_wal_retention(
                store.local(store.root),
                self.database.name,
                list(result["keep"]),
                dry_run=dry_run,
                logger=self.log,
            )
        return result


class PublishBackupOperator(DatabaseOperator):
    """Announce the verified backup: an event on the database's backup Asset (drills listen to it)."""

    def __init__(self, **kwargs: Any) -> None:
        database = kwargs["database"]
        kwargs.setdefault("outlets", [backup_asset(database.name)])
        super().__init__(**kwargs)

    def run(self, context: Any) -> dict[str, Any]:
        backup_id = self.backup_id(context)
        store = self.store()
        manifest = store.read_manifest(self.database.name, backup_id)
        if manifest is None:
            raise AirflowFailException(f"backup {backup_id} does not exist: nothing to publish")
        extra = {
            "database": self.database.name,
            "backup_id": backup_id,
            "location": store.location(self.database.name, backup_id),
            "method": manifest.method,
            "bytes": manifest.bytes,
            "consistent_at": manifest.consistent_at.isoformat(),
        }
        wal = context["ti"].xcom_pull(task_ids=WAL_STEP) if self.database.backup.wal_archive.enabled else None
        if wal:
            extra["wal"] = {
                k: wal.get(k) for k in ("start_segment", "newest_segment", "newest_at", "rpo_seconds")
            }
        context["outlet_events"][backup_asset(self.database.name)].extra = extra
        self.log.info("published %s", extra)
        return extra


def backup_report_of(
    context: Any, database: str, backup_id: str, *, wal_archive: bool = False
) -> BackupReport:
    """The run's backup record, from what its tasks recorded (their results, errors and states)."""
    ti, dag_run = context["ti"], context["dag_run"]
    tasks = backup_steps(wal_archive)
    failed_task, error = first_failure(context, tasks)
    return build_backup_report(
        database=database,
        dag_id=dag_run.dag_id,
        run_id=dag_run.run_id,
        started_at=(dag_run.start_date or datetime.now(UTC)).isoformat(),
        finished_at=datetime.now(UTC).isoformat(),
        states=task_states(context, tasks),
        errors={t: e for t in tasks if (e := ti.xcom_pull(task_ids=t, key=ERROR_KEY))},
        preflight=ti.xcom_pull(task_ids="preflight"),
        backup=ti.xcom_pull(task_ids="backup"),
        manifest=ti.xcom_pull(task_ids="manifest"),
        verification=ti.xcom_pull(task_ids="verify") or ti.xcom_pull(task_ids="verify", key="verification"),
        retention=ti.xcom_pull(task_ids="retention"),
        published=ti.xcom_pull(task_ids="publish"),
        failed_task=failed_task,
        error=error,
        backup_id=backup_id,
        wal=(ti.xcom_pull(task_ids=WAL_STEP) or ti.xcom_pull(task_ids=WAL_STEP, key="wal"))
        if wal_archive
        else None,
        steps=tasks,
    )


class BackupReportOperator(DatabaseOperator):
    """Write the run's Markdown + JSON report and make its summary the run's note.

    Runs whatever happened upstream (trigger rule ``all_done``); its own failure never
    changes the backup's outcome (``notify`` decides the run's state).
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)

    def run(self, context: Any) -> dict[str, Any]:
        from opsdag.reports.backup_report import write_backup_report

        report = backup_report_of(
            context,
            self.database.name,
            self.backup_id(context),
            wal_archive=self.database.backup.wal_archive.enabled,
        )
        written = write_backup_report(report)
        return self.publish_report(context, report, written)


class BackupNotifyOperator(DatabaseOperator):
    """Tell Slack how the run went (failures always, successes unless turned off).

    Says what the report says (its record, or the same record built again when the
    report task failed). Runs whatever happened upstream (trigger rule ``all_done``) and
    then fails itself if the backup failed, so that the DAG run's state is the backup's.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)

    def execute(self, context: Any) -> dict[str, Any]:
        from opsdag.notify.backup_messages import backup_message
        from opsdag.notify.slack import send_slack

        written = context["ti"].xcom_pull(task_ids="report")
        if written:
            report = BackupReport.model_validate(written)
        else:
            report = backup_report_of(
                context,
                self.database.name,
                self.backup_id(context),
                wal_archive=self.database.backup.wal_archive.enabled,
            )
            self.log.warning("the report task left no report: notifying from the tasks' results")
        text, blocks = backup_message(report, report_file=(written or {}).get("markdown"))
        self.log.info("%s", text)
        notified = False
        if not report.ok or self.database.notifications.on_success:
            notified = send_slack(slack_conn_id(self.database), text, blocks=blocks)
        if not report.ok:
            raise AirflowFailException(f"the backup failed at {report.failed_task}: {report.error}")
        return {"result": report.result, "summary": report.summary, "notified": notified}

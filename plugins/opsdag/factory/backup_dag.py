"""``backup__<database>``: scheduled backups with a manifest, verification and retention."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param

from opsdag.spec.common import format_duration
from opsdag.spec.database import DatabaseSpec


def backup_doc(spec: DatabaseSpec) -> str:
    b, r = spec.backup, spec.retention
    compression = "none" if b.compression == "none" else f"{b.compression} level {b.compression_level}"
    return (
        f"### Backup of `{spec.name}`\n\n{spec.description}\n\n"
        "`preflight` (server, version, free space) -> `backup` -> `manifest` (written last: the backup "
        "exists from then on) -> `verify` (checksums re-read from storage, archive contents) -> "
        "`retention` -> `publish` (Asset event naming the backup, for the drill) -> `report` (always) -> "
        "`notify`.\n\n"
        f"- connection `{spec.connection_id}`, database `{spec.database or '(the connection schema)'}`\n"
        f"- method `{b.method}` with {b.jobs} job(s), compression {compression}, "
        f"table checksums {'on' if b.table_checksums else 'off'}\n"
        f"- storage `{b.storage or 'the state directory (OPSDAG_BACKUPS_DIR)'}`\n"
        f"- {_wal_doc(spec)}\n"
        f"- schedule `{b.schedule}`; retention: last {r.keep_last}, daily {r.daily}, weekly {r.weekly}, "
        f"monthly {r.monthly}\n"
        f"- objectives: RTO {format_duration(spec.objectives.rto)}, "
        f"RPO {format_duration(spec.objectives.rpo)}\n"
        f"- owners: {', '.join(spec.owners) or '-'}\n\n"
        "Trigger by hand (or through the REST API) with `dry_run_retention: true` to see what retention "
        "would prune without deleting anything.\n\n"
        "Reports: `<reports root>/backup__<database>/<run_id>.md|.json`."
    )


def _wal_doc(spec: DatabaseSpec) -> str:
    wal = spec.backup.wal_archive
    if not wal.enabled:
        return "WAL archiving: off"
    return (
        f"WAL archiving: on (archive_timeout {format_duration(wal.archive_timeout)}): "
        "`wal_continuity` checks that the archive holds every segment from the base backup's start on "
        "(a gap fails the run, naming the first missing segment) and reports the newest archived point "
        "(the RPO); retention prunes WAL older than the oldest kept base backup's start"
    )


def backup_dag(spec: DatabaseSpec) -> DAG:
    from opsdag.operators.backup import (
        BackupManifestOperator,
        BackupNotifyOperator,
        BackupPreflightOperator,
        BackupReportOperator,
        BackupRetentionOperator,
        PgBackupOperator,
        PublishBackupOperator,
        VerifyBackupOperator,
    )
    from opsdag.operators.wal_continuity import WalContinuityOperator

    with DAG(
        dag_id=f"backup__{spec.name}",
        schedule=spec.backup.schedule,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["opsdag", "backup"],
        doc_md=backup_doc(spec),
        params={
            "dry_run_retention": Param(
                False,
                type="boolean",
                title="Dry-run retention",
                description="Back up as usual, but only list the old backups retention would delete.",
            ),
        },
        default_args={"owner": ",".join(spec.owners) or "opsdag", "retries": 0},
    ) as dag:
        common = {"database": spec}
        timeout = spec.backup.timeout or timedelta(hours=12)
        preflight = BackupPreflightOperator(
            task_id="preflight", retries=2, retry_delay=timedelta(seconds=30), **common
        )
        backup = PgBackupOperator(
            task_id="backup", retries=1, retry_delay=timedelta(minutes=1), execution_timeout=timeout, **common
        )
        manifest = BackupManifestOperator(task_id="manifest", retries=1, **common)
        verify = VerifyBackupOperator(task_id="verify", **common)
        retention = BackupRetentionOperator(task_id="retention", retries=1, **common)
        publish = PublishBackupOperator(task_id="publish", retries=1, **common)
        report = BackupReportOperator(task_id="report", **common)
        notify = BackupNotifyOperator(task_id="notify", **common)
        checked = verify
        if spec.backup.wal_archive.enabled:
            checked = verify >> WalContinuityOperator(task_id="wal_continuity", **common)
        preflight >> backup >> manifest >> verify
        checked >> retention >> publish >> report >> notify
    return dag

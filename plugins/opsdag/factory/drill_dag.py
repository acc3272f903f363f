"""``drill__<database>``: prove a verified backup restorable, within the RTO and RPO.

The backup restored is the ``backup_id`` param's, else the one the triggering backup
run announced (its Asset event), else the newest verified (``opsdag.backups.drill_pick``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Param

from opsdag.spec.common import format_duration
from opsdag.spec.database import DatabaseSpec


def drill_schedule(spec: DatabaseSpec) -> Any:
    """Cron and/or new backups (an Asset event of the backup DAG), as the spec says."""
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    from opsdag.operators.backup import backup_asset

    assert spec.drill is not None
    cron, on_backup = spec.drill.schedule, spec.drill.on_new_backup
    if cron and on_backup:
        return AssetOrTimeSchedule(
            timetable=CronTriggerTimetable(cron, timezone="UTC"), assets=[backup_asset(spec.name)]
        )
    if on_backup:
        return [backup_asset(spec.name)]
    return cron


def drill_doc(spec: DatabaseSpec) -> str:
    assert spec.drill is not None
    d = spec.drill
    when = " and ".join(
        w
        for w in ((f"`{d.schedule}`" if d.schedule else ""), ("every new backup" if d.on_new_backup else ""))
        if w
    )
    checks = "".join(f"  - `{c.name}`: `{c.sql}` = `{c.expect}`\n" for c in d.checks) or "  - (none)\n"
    return (
        f"### DR drill of `{spec.name}`\n\n{spec.description}\n\n"
        "`pick_backup` (the `backup_id` param, else the backup named by the backup run that triggered "
        "this drill, else the newest verified; with WAL archiving, the newest base backup before the "
        "`recovery_target_time` param, refused when the archive does not cover it) -> `provision` "
        "(a scratch database on the drill server; refuses the source or an unmarked target) -> "
        "`restore` -> `verify` (every table's rows and checksum, or the `pitr_marker` rows after a "
        "point-in-time recovery; the checks below) -> `measure` (RTO/RPO) -> `teardown` (always) -> "
        "`report` -> `notify`.\n\n"
        f"- runs on {when or 'manual triggers only'}\n"
        f"- drill target connection `{d.target_conn_id}` (its extra must hold "
        '`{"opsdag_drill_target": true}`)\n'
        f"- objectives: RTO {format_duration(spec.objectives.rto)}, "
        f"RPO {format_duration(spec.objectives.rpo)}\n"
        f"- checks:\n{checks}"
        f"- owners: {', '.join(spec.owners) or '-'}\n\n"
        "Reports: `<reports root>/drill__<database>/<run_id>.md|.json`."
    )


def drill_dag(spec: DatabaseSpec) -> DAG | None:
    """The drill DAG, or None for a database whose spec has no ``drill`` section."""
    if spec.drill is None:
        return None
    from opsdag.operators.drill import (
        MeasureDrillOperator,
        PickBackupOperator,
        ProvisionDrillOperator,
        RestoreDrillOperator,
        TeardownDrillOperator,
        VerifyDrillOperator,
    )
    from opsdag.operators.drill_outcome import DrillNotifyOperator, DrillReportOperator

    with DAG(
        dag_id=f"drill__{spec.name}",
        schedule=drill_schedule(spec),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["opsdag", "drill"],
        doc_md=drill_doc(spec),
        params={
            "backup_id": Param(
                None,
                type=["null", "string"],
                title="Backup id",
                description=(
                    "Restore this backup (it must be verified) instead of the one the triggering backup "
                    "run announced, or the newest verified one."
                ),
            ),
            "recovery_target_time": Param(
                "latest",
                type="string",
                title="Recover to",
                description=(
                    "With WAL archiving (backup.wal_archive): 'latest' replays every archived transaction; "
                    "an ISO 8601 time with its zone (2026-11-30T02:15:00Z) recovers to that moment from the "
                    "newest base backup before it. Without archiving only 'latest' (the backup as it is)."
                ),
            ),
        },
        default_args={"owner": ",".join(spec.owners) or "opsdag", "retries": 0},
    ) as dag:
        common = {"database": spec}
        pick = PickBackupOperator(
            task_id="pick_backup", retries=1, retry_delay=timedelta(seconds=30), **common
        )
        provision = ProvisionDrillOperator(task_id="provision", **common)
        restore = RestoreDrillOperator(task_id="restore", **common)
        verify = VerifyDrillOperator(task_id="verify", **common)
        measure = MeasureDrillOperator(task_id="measure", **common)
        teardown = TeardownDrillOperator(
            task_id="teardown", retries=2, retry_delay=timedelta(seconds=10), **common
        )
        report = DrillReportOperator(task_id="report", **common)
        notify = DrillNotifyOperator(task_id="notify", **common)

        pick >> provision >> restore >> verify >> teardown.as_teardown(setups=provision)
        verify >> measure
        [measure, teardown] >> report >> notify
    teardown.on_failure_fail_dagrun = True
    return dag

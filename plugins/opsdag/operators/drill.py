"""Operators of the drill DAG.

pick -> provision -> restore -> verify -> measure -> teardown -> report -> notify.

``provision`` and ``teardown`` are an Airflow setup/teardown pair: teardown runs whenever
provisioning succeeded, also when the restore or the verification failed. Every name a
drill creates comes from ``(dag_id, run_id)`` (``opsdag.backups.drill_engine.drill_names``), so
each task and each retry finds them without another task's XCom, and teardown is safe
to run again when nothing is left.

Physical drills start a temporary server in the restore task and query it in verify: the
restore, verify and teardown tasks must run on the same host (one worker, or a queue
bound to one host).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowFailException

from opsdag.backups import drill_engine as drill
from opsdag.backups.drill_pick import announced_backup, pick_for_drill
from opsdag.backups.drill_verification import measure, verification_failure, verify_restored
from opsdag.backups.manifest import Manifest
from opsdag.backups.pg import PgTarget, target_from_connection
from opsdag.backups.pitr_plan import TargetRefused
from opsdag.format import duration
from opsdag.operators.backup import backup_asset
from opsdag.operators.database_base import DatabaseOperator
from opsdag.spec.run_conf import ConfRefused, DrillConf, check_conf


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


class DrillOperator(DatabaseOperator):
    """Shared by the drill's steps: the picked backup, the drill target, this run's names."""

    ui_color = "#fde2d0"

    def names(self, context: Any) -> drill.DrillNames:
        return drill.drill_names(context["dag_run"].dag_id, context["dag_run"].run_id, self.database.name)

    def picked(self, context: Any) -> dict[str, Any]:
        pick = context["ti"].xcom_pull(task_ids="pick_backup")
        if not pick:
            raise AirflowFailException("no backup was picked for this drill")
        return pick

    def manifest(self, context: Any) -> Manifest:
        backup_id = self.picked(context)["backup_id"]
        manifest = self.store().read_manifest(self.database.name, backup_id)
        if manifest is None:
            raise AirflowFailException(f"backup {backup_id} of {self.database.name} no longer exists")
        return manifest

    def target(self) -> tuple[PgTarget, dict[str, Any]]:
        """The drill server's maintenance connection and the connection's extra."""
        assert self.database.drill is not None
        conn = BaseHook.get_connection(self.database.drill.target_conn_id)
        return target_from_connection(conn, conn.schema or "postgres"), dict(conn.extra_dejson or {})

    def mark_bad(self, context: Any, problems: list[str]) -> str:
        """The drill proved the backup corrupt: say so in its verification.json (the sentence to log)."""
        backup_id = self.picked(context)["backup_id"]
        run = context["dag_run"]
        self.store().mark_bad(self.database.name, backup_id, problems, f"{run.dag_id} run {run.run_id}")
        return (
            f"backup {backup_id} is marked bad: retention no longer counts it as a good backup "
            "and no drill picks it again"
        )

    def execute(self, context: Any) -> Any:
        """``run``, with when it started and ended and how long it took added to its result."""
        started, started_at = time.monotonic(), now_iso()
        result = super().execute(context)
        if isinstance(result, dict):
            result.setdefault("started_at", started_at)
            result.update(finished_at=now_iso(), task_seconds=round(time.monotonic() - started, 3))
        return result


class PickBackupOperator(DrillOperator):
    """The backup to restore: the ``backup_id`` param (templated), else the one the triggering
    backup's Asset event names, else the newest verified (``opsdag.backups.drill_pick``)."""

    template_fields: Sequence[str] = ("backup_id", "recovery_target_time")

    def __init__(
        self,
        *,
        backup_id: str | None = "{{ params.backup_id or '' }}",
        recovery_target_time: str | None = "{{ params.recovery_target_time or 'latest' }}",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.backup_id = backup_id
        self.recovery_target_time = recovery_target_time

    def triggering_events(self, context: Any) -> list[Any]:
        """The events of this database's backup Asset that started this run (none for cron or manual runs)."""
        events = context.get("triggering_asset_events") or {}
        try:
            return list(events[backup_asset(self.database.name)])
        except (KeyError, TypeError):
            return []

    def run(self, context: Any) -> dict[str, Any]:
        try:
            check_conf(DrillConf, context["dag_run"].conf, context["dag_run"].dag_id)
        except ConfRefused as exc:
            raise AirflowFailException(str(exc)) from exc
        store = self.store()
        announcement = announced_backup(self.triggering_events(context))
        backup = self.database.backup
        try:
            choice, recovery = pick_for_drill(
                store,
                self.database.name,
                self.backup_id,
                self.recovery_target_time,
                announcement=announcement,
                wal_archived=backup.method == "physical" and backup.wal_archive.enabled,
            )
        except (drill.DrillError, TargetRefused) as exc:
            raise AirflowFailException(str(exc)) from exc
        result = choice.to_xcom(
            location=store.location(self.database.name, choice.backup.id),
            drill_started=context["dag_run"].start_date or datetime.now(UTC),
        )
        if recovery is not None:
            result["recovery"] = recovery
            self.log.info(
                "recovering to %s: the backups can restore from %s to %s; WAL %s to %s, checksums verified",
                recovery["target"],
                recovery["restorable_from"],
                recovery["restorable_to"] or "the end of the archive",
                recovery["wal"]["start_segment"],
                recovery["wal"]["newest_segment"],
            )
        self.log.info("drill of %s uses backup %s (%s)", self.database.name, choice.backup.id, choice.reason)
        return result


class ProvisionDrillOperator(DrillOperator):
    """Check the target is a marked drill target and not the source; create the scratch database."""

    def run(self, context: Any) -> dict[str, Any]:
        started_at = now_iso()
        self.picked(context)
        manifest = self.manifest(context)
        names = self.names(context)
        target, extra = self.target()
        assert self.database.drill is not None
        try:
            drill.check_target(
                source_conn_id=self.database.connection_id,
                source=self.source(),
                target_conn_id=self.database.drill.target_conn_id,
                target=target,
                target_extra=extra,
                scratch_db=names.scratch_db,
            )
            if manifest.method == "logical":
                result = drill.provision_database(target, names, logger=self.log)
            else:
                names.workdir.mkdir(parents=True, exist_ok=True)
                result = {"workdir": str(names.workdir), "server": "temporary server on this worker"}
        except drill.DrillRefused as exc:
            raise AirflowFailException(str(exc)) from exc
        return {**result, "started_at": started_at, "method": manifest.method}


class RestoreDrillOperator(DrillOperator):
    """``pg_restore -j`` into the scratch database, or a temporary server on the extracted base backup."""

    def run(self, context: Any) -> dict[str, Any]:
        manifest = self.manifest(context)
        assert self.database.drill is not None
        target = self.target()[0] if manifest.method == "logical" else None
        try:
            result = drill.restore(
                self.store(),
                self.database.name,
                manifest,
                self.names(context),
                target=target,
                jobs=self.database.drill.jobs or self.database.backup.jobs,
                recovery=self.picked(context).get("recovery"),
                logger=self.log,
            )
        except drill.BackupCorrupt as exc:
            raise AirflowFailException(f"{exc}; {self.mark_bad(context, exc.problems)}") from exc
        except drill.DrillError as exc:
            raise AirflowFailException(str(exc)) from exc
        self.log.info("restored backup %s: %s", manifest.id, result)
        return result


class VerifyDrillOperator(DrillOperator):
    """Every table of the manifest with the same rows and checksum; the spec's checks."""

    def run(self, context: Any) -> dict[str, Any]:
        manifest = self.manifest(context)
        assert self.database.drill is not None
        target = self.target()[0] if manifest.method == "logical" else None
        role = drill.physical_role(manifest, self.source().user)
        restored = drill.restored_target(manifest, self.names(context), target, role)
        checks = [c.model_dump(mode="json") for c in self.database.drill.checks]
        recovery = self.picked(context).get("recovery")
        if recovery is not None:
            return self.verify_recovered(context, restored, checks, recovery)
        with restored.connect() as conn:
            result = verify_restored(conn, manifest, checks)
        result["verified_at"] = now_iso() if result["ok"] else None
        context["ti"].xcom_push(key="verification", value=result)
        if not result["ok"]:
            message = verification_failure(result)
            differing = [t for t in result["tables"] if not t["ok"]]
            if differing:  # the restored data is not what the manifest recorded: the backup is corrupt
                problems = [f"table {t['table']}: restored data differs from the manifest" for t in differing]
                message = f"{message}; {self.mark_bad(context, problems)}"
            raise AirflowFailException(message)
        self.log.info(
            "restored copy verified: %d tables, %d checks", len(result["tables"]), len(result["checks"])
        )
        return result

    def verify_recovered(
        self, context: Any, restored: PgTarget, checks: list[dict[str, Any]], recovery: dict[str, Any]
    ) -> dict[str, Any]:
        """A point-in-time copy: promoted, the marker rows exact, the checks (``pitr_verification``)."""
        from opsdag.backups.pitr_verification import recovery_failure, verify_recovered

        assert self.database.drill is not None
        marker = self.database.drill.pitr_marker
        with restored.connect() as conn:
            result = verify_recovered(
                conn,
                checks,
                target=recovery["target"],
                marker=marker.model_dump() if marker else None,
                source_connect=self.source().connect,
            )
        result["verified_at"] = now_iso() if result["ok"] else None
        context["ti"].xcom_push(key="verification", value=result)
        if not result["ok"]:
            raise AirflowFailException(recovery_failure(result))
        self.log.info(
            "point-in-time copy verified: last transaction %s, %s",
            result["recovery"]["last_transaction_at"],
            "marker rows exact" if marker else "no pitr_marker in the spec to compare",
        )
        return result


class MeasureDrillOperator(DrillOperator):
    """RTO and RPO against the spec's objectives; missing one fails the drill."""

    def run(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        pick = self.picked(context)
        provision = ti.xcom_pull(task_ids="provision") or {}
        verification = ti.xcom_pull(task_ids="verify") or {}
        # RPO: from the backup's consistency point to the drill's start; recovering with the WAL
        # archive, from the last transaction that came back to the target (the drill's start for latest)
        until, recovered = _parse(pick["drill_started"]), _parse(pick["consistent_at"])
        if pick.get("recovery"):
            target = pick["recovery"]["target"]
            until = until if target == "latest" else _parse(target)
            recovered = _parse((verification.get("recovery") or {}).get("recovered_through")) or recovered
        result = measure(
            provision_started=_parse(provision.get("started_at")),
            verified_at=_parse(verification.get("verified_at")),
            drill_started=until or datetime.now(UTC),
            consistent_at=recovered or datetime.now(UTC),
            rto_objective=self.database.objectives.rto,
            rpo_objective=self.database.objectives.rpo,
        )
        ti.xcom_push(key="measure", value=result)
        if not result["ok"]:
            raise AirflowFailException("; ".join(result["problems"]))
        self.log.info(
            "RTO %s, RPO %s: objectives met", duration(result["rto_seconds"]), duration(result["rpo_seconds"])
        )
        return result


class TeardownDrillOperator(DrillOperator):
    """Drop the scratch database / stop the temporary server, remove the workdir; check nothing is left."""

    def run(self, context: Any) -> dict[str, Any]:
        target = self.target()[0] if self.database.drill is not None else None
        result = drill.teardown(target, self.names(context), logger=self.log)
        context["ti"].xcom_push(key="teardown", value=result)
        if not result["clean"]:
            raise AirflowFailException("teardown left things behind: " + "; ".join(result["left_behind"]))
        return result


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None

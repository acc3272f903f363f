"""Which backup a drill restores: the one asked for, the one a backup run announced, or the newest verified.

A drill started by a backup's Asset event proves *that* backup restorable, not whatever
happens to be newest when it runs: the backup DAG's ``publish`` task names the backup in
the event's extra (``backup_id``), and the drill restores the backup named by the newest
event of its database's asset. An explicit ``backup_id`` param wins over any event; a
drill with neither (cron, manual) restores the newest verified backup. A named backup
that is missing or not verified is refused with the reason: the drill never quietly
restores another one in its place.

``choose_backup`` is the decision, pure (no storage, no Airflow); ``pick_backup`` reads
the store and decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opsdag.backups.drill_engine import DrillError
from opsdag.backups.storage import BackupStore, StoredBackup


@dataclass(frozen=True)
class BackupAnnouncement:
    """What the newest triggering asset event says: which backup, when, from which run."""

    backup_id: str | None
    announced_at: datetime | None = None
    source: str = "an asset event"

    def describe(self) -> str:
        when = f" at {self.announced_at.isoformat()}" if self.announced_at else ""
        return f"{self.source}{when}"


@dataclass(frozen=True)
class BackupChoice:
    """The backup a drill restores and, in words, why that one."""

    backup: StoredBackup
    reason: str

    def to_xcom(self, *, location: str, drill_started: datetime) -> dict[str, Any]:
        """What the drill's later steps and its report need to know of the backup."""
        manifest = self.backup.manifest
        if manifest is None:
            raise DrillError(f"backup {self.backup.id} has no manifest")
        return {
            "backup_id": self.backup.id,
            "chosen_because": self.reason,
            "method": manifest.method,
            "consistent_at": manifest.consistent_at.isoformat(),
            "bytes": manifest.bytes,
            "tables": len(manifest.tables),
            "server_version": manifest.server_version,
            "location": location,
            "drill_started": drill_started.isoformat(),
        }


def announced_backup(events: Iterable[Any]) -> BackupAnnouncement | None:
    """The newest of the asset events that started this run (``.extra``, ``.timestamp``), or None.

    Events come from ``context["triggering_asset_events"][<the database's asset>]``;
    several queue up when backups finish faster than drills run.
    """
    events = list(events)
    if not events:
        return None
    newest = max(events, key=lambda event: event.timestamp)
    extra = newest.extra if isinstance(newest.extra, dict) else {}
    backup_id = str(extra.get("backup_id") or "").strip() or None
    dag_id, run_id = getattr(newest, "source_dag_id", None), getattr(newest, "source_run_id", None)
    source = f"the asset event of {dag_id} / {run_id}" if dag_id and run_id else "an asset event"
    return BackupAnnouncement(backup_id=backup_id, announced_at=newest.timestamp, source=source)


def choose_backup(
    backups: Sequence[StoredBackup],
    *,
    database: str,
    where: str,
    requested: str | None = None,
    announcement: BackupAnnouncement | None = None,
) -> BackupChoice:
    """The backup to restore among ``backups`` (oldest first), or ``DrillError`` saying why none.

    :param backups: the database's backups as the store lists them, oldest first.
    :param database: the database's name, for the messages.
    :param where: the store's URL, for the messages.
    :param requested: the run's ``backup_id`` param (wins over everything).
    :param announcement: what the triggering asset event named, if the run has one.
    """
    requested = (requested or "").strip() or None
    if requested:
        return BackupChoice(_named(backups, requested, database, where, ""), "the run's backup_id param")
    if announcement is not None and announcement.backup_id:
        by = f", announced by {announcement.describe()},"
        backup = _named(backups, announcement.backup_id, database, where, by)
        return BackupChoice(backup, f"announced by {announcement.describe()}")
    verified = [b for b in backups if b.state == "verified"]
    if not verified:
        raise DrillError(f"no verified backup of {database} at {where}")
    if announcement is not None:
        return BackupChoice(verified[-1], f"newest verified ({announcement.describe()} names no backup)")
    return BackupChoice(verified[-1], "newest verified")


def _named(
    backups: Sequence[StoredBackup], backup_id: str, database: str, where: str, by: str
) -> StoredBackup:
    for backup in backups:
        if backup.id == backup_id:
            if backup.state != "verified":
                raise DrillError(f"backup {backup_id} of {database}{by} is {backup.state}, not verified")
            return backup
    raise DrillError(f"backup {backup_id} of {database}{by} does not exist at {where}")


def pick_backup(
    store: BackupStore,
    database: str,
    backup_id: str | None = None,
    *,
    announcement: BackupAnnouncement | None = None,
) -> BackupChoice:
    """``choose_backup`` over the backups in ``store``."""
    return choose_backup(
        store.list_backups(database),
        database=database,
        where=store.url,
        requested=backup_id,
        announcement=announcement,
    )


def pick_for_drill(
    store: BackupStore,
    database: str,
    backup_id: str | None,
    recovery_target_time: str | None,
    *,
    announcement: BackupAnnouncement | None,
    wal_archived: bool,
) -> tuple[BackupChoice, dict[str, Any] | None]:
    """The backup to restore and, with a WAL archive, the recovery to make (``pitr.plan``).

    With WAL archiving every drill recovers: to ``latest`` by default, else to the run's
    ``recovery_target_time``. Without, only ``latest`` (the backup as it is) is possible.
    """
    from opsdag.backups import pitr
    from opsdag.backups.pitr_plan import FIELD, TargetRefused, parse_target

    target = parse_target(recovery_target_time)
    if not wal_archived:
        if not target.latest:
            raise TargetRefused(
                f"{FIELD} {target.describe()}: {database} has no WAL archive (backup.wal_archive.enabled "
                "with method: physical), so a drill restores its backups as they are: leave it 'latest'"
            )
        return pick_backup(store, database, backup_id, announcement=announcement), None
    requested = (backup_id or "").strip() or (announcement.backup_id if announcement else None)
    planned = pitr.plan(store, database, target, requested=requested)
    why = "the run's backup_id param" if (backup_id or "").strip() else "newest verified base backup"
    return BackupChoice(planned["base"], f"{why} for recovery to {target.describe()}"), planned["recovery"]

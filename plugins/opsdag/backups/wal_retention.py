"""WAL retention: prune archived WAL that no kept base backup can use, never a segment one needs.

Recovery from a base backup replays the archive from the backup's start segment on, so
the oldest start segment among the base backups that retention keeps is the boundary:
segments (and ``.partial`` and backup history files) numbered below it are pruned, the
rest is kept. Timeline history files are always kept (tiny, and a recovery across a
timeline switch needs them). With no kept physical backup, or one whose start cannot be
read, nothing is pruned: an archive is never emptied by a misreading.

``plan_wal_retention`` is the pure decision; ``apply_wal_retention`` reads the archive and
the kept backups' ``backup_manifest``, and deletes (segment first, then its ``.sha256``).
Called from the backup DAG's retention step, after the backups' own retention
(``retention.py``), with the ids that step keeps. The root is a local path or the backup
store's ObjectStoragePath (S3): on an object store there are no temp files, and a ``.sha256``
without its segment is removed only once it is an hour old (a push writes the checksum
first, so a young orphan may be a push in progress). No Airflow import.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from opsdag.backups.wal_archive import (
    WalArchiveError,
    backup_path,
    backup_wal_range,
    is_object_store,
    list_archive,
    orphan_checksums,
    segment_size_of,
)
from opsdag.backups.wal_names import Segment, is_segment, parse_segment
from opsdag.backups.wal_push import CHECKSUM_SUFFIX, archive_dir

log = logging.getLogger(__name__)
STALE_TMP_SECONDS = 24 * 3600
ORPHAN_CHECKSUM_MIN_AGE = timedelta(hours=1)


@dataclass
class WalRetentionPlan:
    """What to delete, what is kept from where, and why (one sentence)."""

    boundary: str | None
    reason: str
    delete: list[str] = field(default_factory=list)
    keep: list[str] = field(default_factory=list)

    def to_dict(self, deleted: int = 0, dry_run: bool = False) -> dict[str, Any]:
        return {
            "dry_run": dry_run,
            "boundary": self.boundary,
            "reason": self.reason,
            "kept_files": len(self.keep),
            "delete_files": len(self.delete),
            "deleted_files": deleted,
            "oldest_kept": self.keep[0] if self.keep else None,
            "delete_range": [self.delete[0], self.delete[-1]] if self.delete else [],
        }


def _number_of(name: str, segment_size: int) -> int | None:
    """The segment number a file belongs to (``.partial``, ``.backup`` by their prefix); None for history."""
    prefix = name[:24]
    return parse_segment(prefix, segment_size).number if is_segment(prefix) else None


def plan_wal_retention(
    names: list[str], kept_starts: dict[str, Segment], segment_size: int, *, unknown: list[str] | None = None
) -> WalRetentionPlan:
    """Prune what lies below the oldest start among ``kept_starts`` (backup id -> start segment).

    ``unknown`` names kept backups whose start could not be read: then nothing is pruned.
    """
    names = sorted(names)
    if unknown:
        return WalRetentionPlan(
            None,
            f"nothing pruned: the WAL start of kept backup(s) {', '.join(unknown)} is unknown",
            keep=names,
        )
    if not kept_starts:
        return WalRetentionPlan(None, "nothing pruned: no kept physical base backup", keep=names)
    oldest_id, boundary = min(kept_starts.items(), key=lambda item: (item[1].number, item[0]))
    plan = WalRetentionPlan(
        boundary.name,
        f"keeping WAL from {boundary.name}, the start of the oldest kept base backup {oldest_id}",
    )
    for name in names:
        number = _number_of(name, segment_size)
        (plan.delete if number is not None and number < boundary.number else plan.keep).append(name)
    return plan


def kept_starts(
    root: Any, database: str, backup_ids: list[str], segment_size: int
) -> tuple[dict[str, Segment], list[str]]:
    """Start segments of the kept physical backups, and the kept ones whose start cannot be read."""
    starts, unknown = {}, []
    for backup_id in backup_ids:
        backup_dir = backup_path(root, database, backup_id)
        try:
            method = json.loads((backup_dir / "manifest.json").read_bytes()).get("method")
        except FileNotFoundError:
            continue  # in progress: newer than any kept backup, bounded by them
        except ValueError:
            unknown.append(backup_id)
            continue
        if method != "physical":
            continue
        try:
            starts[backup_id] = backup_wal_range(backup_dir, segment_size)[0]
        except WalArchiveError:
            unknown.append(backup_id)
    return starts, unknown


def apply_wal_retention(
    root: Any,
    database: str,
    kept_backup_ids: list[str],
    *,
    dry_run: bool = False,
    logger: logging.Logger | None = None,
) -> dict[str, Any]:
    """Prune ``database``'s archive down to what the kept backups need (or, in a dry run, say it)."""
    logger = logger or log
    directory = archive_dir(root, database)
    files = list_archive(directory)
    size = segment_size_of(files)
    starts, unknown = kept_starts(root, database, kept_backup_ids, size)
    plan = plan_wal_retention([f.name for f in files], starts, size, unknown=unknown)
    logger.info(
        "%sWAL retention: %s; %d file(s) to prune",
        "[dry run] " if dry_run else "",
        plan.reason,
        len(plan.delete),
    )
    deleted = 0
    if not dry_run:
        for name in plan.delete:
            (directory / name).unlink(missing_ok=True)
            (directory / f"{name}{CHECKSUM_SUFFIX}").unlink(missing_ok=True)
            deleted += 1
        remote = is_object_store(directory)
        older_than = datetime.now(UTC) - ORPHAN_CHECKSUM_MIN_AGE if remote else None
        for orphan in orphan_checksums(directory, older_than=older_than):
            (directory / orphan).unlink(missing_ok=True)
        if not remote:
            _remove_stale_temp_files(Path(directory.path) if hasattr(directory, "fs") else directory)
    return plan.to_dict(deleted, dry_run)


def _remove_stale_temp_files(directory: Path) -> None:
    """Temp files of pushes killed long ago (a running push's is minutes old at most)."""
    cutoff = time.time() - STALE_TMP_SECONDS
    for path in directory.glob(".*.tmp"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except FileNotFoundError:
            continue

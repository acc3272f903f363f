"""A database's WAL archive on disk: what it holds, which WAL a base backup needs, and the check.

Layout, next to the database's backups (``wal_push`` writes it)::

    <backups root>/<database>/wal/000000010000000000000005          a segment
    <backups root>/<database>/wal/000000010000000000000005.sha256   its sha256 (sha256sum format)
    <backups root>/<database>/wal/.000000010000000000000006.1234.tmp   a push in progress

The range of WAL a physical base backup spans is read from pg_basebackup's own
``backup_manifest`` (``WAL-Ranges``) stored in the backup. The decision itself is the pure
``wal_continuity.check_continuity``; this module gathers its inputs. The root is a local
path, or the backup store's ObjectStoragePath (S3, written by ``wal push --conn-id``): the
same functions read both, a listing of the object store giving each object's size and
LastModified time. No Airflow import (an ObjectStoragePath is only used, never made here).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opsdag.backups.wal_continuity import ArchivedSegment, WalContinuity, check_continuity
from opsdag.backups.wal_names import (
    DEFAULT_SEGMENT_SIZE,
    Segment,
    WalNameError,
    check_segment_size,
    is_archivable,
    is_segment,
    parse_lsn,
    parse_segment,
    segment_of,
)
from opsdag.backups.wal_push import CHECKSUM_SUFFIX, archive_dir, read_checksum, sha256_file

BACKUP_MANIFEST = "data/backup_manifest"


class WalArchiveError(RuntimeError):
    """The archive or a backup's WAL range cannot be read; the message says where."""


@dataclass(frozen=True)
class ArchivedFile:
    """A file of the archive: its name, size and modification time (the time it was archived)."""

    name: str
    bytes: int
    archived_at: datetime


def is_object_store(directory: Any) -> bool:
    """True for an ObjectStoragePath on S3/GCS (a local Path, or a file:// one, is a directory)."""
    return hasattr(directory, "fs") and getattr(directory, "protocol", "file") not in ("file", "local", "")


def archive_files(directory: Any) -> list[ArchivedFile]:
    """Every file of the archive directory (segments, checksums, temp files), by name."""
    if is_object_store(directory):
        return _object_files(directory)
    try:
        entries = list(os.scandir(Path(directory.path) if hasattr(directory, "fs") else directory))
    except FileNotFoundError:
        return []
    out = []
    for entry in entries:
        if entry.is_file():
            st = entry.stat()
            out.append(ArchivedFile(entry.name, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
    return sorted(out, key=lambda f: f.name)


def _object_files(directory: Any) -> list[ArchivedFile]:
    fs = directory.fs
    fs.invalidate_cache(directory.path)  # s3fs caches listings; the archive is written elsewhere
    try:
        infos = fs.ls(directory.path, detail=True)
    except FileNotFoundError:
        return []
    out = []
    for info in infos:
        if info.get("type") != "file":
            continue
        when = info.get("LastModified") or info.get("mtime") or info.get("updated")
        if isinstance(when, int | float):
            when = datetime.fromtimestamp(when, UTC)
        elif isinstance(when, str):
            when = datetime.fromisoformat(when.replace("Z", "+00:00"))
        name = info["name"].rstrip("/").rsplit("/", 1)[-1]
        out.append(ArchivedFile(name, int(info.get("size") or 0), when or datetime.now(UTC)))
    return sorted(out, key=lambda f: f.name)


def list_archive(directory: Any) -> list[ArchivedFile]:
    """Every archived WAL file (segments, history, backup history), by name; temp files left out."""
    return [f for f in archive_files(directory) if is_archivable(f.name)]


def segment_size_of(files: list[ArchivedFile]) -> int:
    """The cluster's ``wal_segment_size``: the size of its archived segments (16 MiB if none)."""
    sizes = {f.bytes for f in files if is_segment(f.name)}
    if not sizes:
        return DEFAULT_SEGMENT_SIZE
    if len(sizes) > 1:
        shown = ", ".join(str(s) for s in sorted(sizes))
        raise WalArchiveError(f"archived segments have different sizes ({shown} bytes): some are truncated")
    try:
        return check_segment_size(sizes.pop())
    except WalNameError as exc:
        raise WalArchiveError(f"archived segments are not whole: {exc}") from exc


def checksum_state(directory: Any, name: str) -> str:
    """``ok``, ``mismatch`` (the bytes changed since archiving) or ``missing`` (no .sha256)."""
    stored = read_checksum(directory, name)
    if stored is None:
        return "missing"
    _, digest = sha256_file(directory / name)
    return "ok" if digest == stored else "mismatch"


def backup_wal_range(backup_dir: Any, segment_size: int = DEFAULT_SEGMENT_SIZE) -> tuple[Segment, Segment]:
    """(start, end) segments of a physical base backup, from its ``backup_manifest``."""
    path = backup_dir / BACKUP_MANIFEST
    try:
        ranges = json.loads(path.read_bytes())["WAL-Ranges"]
        first, last = ranges[0], ranges[-1]
        start = segment_of(first["Start-LSN"], int(first["Timeline"]), segment_size)
        # the end LSN is one past the backup's last byte: its segment holds the byte before it
        end_lsn = max(parse_lsn(last["End-LSN"]) - 1, parse_lsn(first["Start-LSN"]))
        end = segment_of(end_lsn, int(last["Timeline"]), segment_size)
    except FileNotFoundError as exc:
        raise WalArchiveError(f"{path} does not exist: not a physical base backup") from exc
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise WalArchiveError(f"{path} has no readable WAL-Ranges: {exc}") from exc
    return start, end


def backup_path(root: Any, database: str, backup_id: str) -> Any:
    """``<root>/<database>/<backup_id>`` (a Path for a local root, else the root's own kind)."""
    return archive_dir(root, database).parent / backup_id


def check_archive(
    root: Any,
    database: str,
    backup_id: str,
    *,
    now: datetime | None = None,
    verify_checksums: bool = True,
) -> WalContinuity:
    """Continuity of ``database``'s archive from base backup ``backup_id``'s start, checksums re-read."""
    directory = archive_dir(root, database)
    files = list_archive(directory)
    size = segment_size_of(files)
    start, end = backup_wal_range(backup_path(root, database, backup_id), size)
    archived = []
    for f in files:
        if not is_segment(f.name):
            continue
        segment = parse_segment(f.name, size)
        needed = segment.number >= start.number and segment.timeline >= start.timeline
        state = checksum_state(directory, f.name) if verify_checksums and needed else "ok"
        archived.append(ArchivedSegment(f.name, f.archived_at, state))  # type: ignore[arg-type]
    return check_continuity(start, archived, now=now or datetime.now(UTC), end=end, segment_size=size)


def orphan_checksums(directory: Any, *, older_than: datetime | None = None) -> list[str]:
    """``.sha256`` files whose segment is gone (a retention interrupted between the two, or on an
    object store a push that died between its checksum and its segment), optionally only those
    last written before ``older_than`` (a young one may belong to a push in progress)."""
    files = archive_files(directory)
    names = {f.name for f in files if is_archivable(f.name)}
    return sorted(
        f.name
        for f in files
        if f.name.endswith(CHECKSUM_SUFFIX)
        and f.name[: -len(CHECKSUM_SUFFIX)] not in names
        and (older_than is None or f.archived_at < older_than)
    )

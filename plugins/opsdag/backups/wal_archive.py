"""A database's WAL archive on disk: what it holds, which WAL a base backup needs, and the check.

Layout, next to the database's backups (``wal_push`` writes it)::

    <backups root>/<database>/wal/000000010000000000000005          a segment
    <backups root>/<database>/wal/000000010000000000000005.sha256   its sha256 (sha256sum format)
    <backups root>/<database>/wal/.000000010000000000000006.1234.tmp   a push in progress

The range of WAL a physical base backup spans is read from pg_basebackup's own
``backup_manifest`` (``WAL-Ranges``) stored in the backup. The decision itself is the pure
``wal_continuity.check_continuity``; this module gathers its inputs. Local (or mounted)
storage only: the archive is written by ``archive_command`` on the database host. No
Airflow import.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

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


def list_archive(directory: Path) -> list[ArchivedFile]:
    """Every archived WAL file (segments, history, backup history), by name; temp files left out."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    out = []
    for entry in entries:
        if entry.is_file() and is_archivable(entry.name):
            st = entry.stat()
            out.append(ArchivedFile(entry.name, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
    return sorted(out, key=lambda f: f.name)


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


def checksum_state(directory: Path, name: str) -> str:
    """``ok``, ``mismatch`` (the bytes changed since archiving) or ``missing`` (no .sha256)."""
    stored = read_checksum(directory, name)
    if stored is None:
        return "missing"
    _, digest = sha256_file(directory / name)
    return "ok" if digest == stored else "mismatch"


def backup_wal_range(backup_dir: Path, segment_size: int = DEFAULT_SEGMENT_SIZE) -> tuple[Segment, Segment]:
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


def check_archive(
    root: Path,
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
    start, end = backup_wal_range(Path(root) / database / backup_id, size)
    archived = []
    for f in files:
        if not is_segment(f.name):
            continue
        segment = parse_segment(f.name, size)
        needed = segment.number >= start.number and segment.timeline >= start.timeline
        state = checksum_state(directory, f.name) if verify_checksums and needed else "ok"
        archived.append(ArchivedSegment(f.name, f.archived_at, state))  # type: ignore[arg-type]
    return check_continuity(start, archived, now=now or datetime.now(UTC), end=end, segment_size=size)


def orphan_checksums(directory: Path) -> list[str]:
    """``.sha256`` files whose segment is gone (a retention interrupted between the two)."""
    names = {f.name for f in list_archive(directory)}
    try:
        sums = [p.name for p in directory.iterdir() if p.name.endswith(CHECKSUM_SUFFIX)]
    except FileNotFoundError:
        return []
    return sorted(s for s in sums if s[: -len(CHECKSUM_SUFFIX)] not in names)

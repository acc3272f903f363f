"""Archive one WAL file: what ``archive_command`` runs on the database host, for every segment.

PostgreSQL deletes (or recycles) a segment once its ``archive_command`` exits 0, so 0 must
mean "stored durably, with its checksum"; anything else makes the archiver keep the
segment and retry. Hence:

- written to a hidden temporary file, fsync'ed, then linked to its name (``link`` fails if
  the name exists, so two pushes never overwrite each other), then the directory fsync'ed;
- its sha256 next to it, as ``<name>.sha256`` in ``sha256sum`` format, written before the
  segment is linked (so there is room for it) and renamed in place right after; if that
  fails, the segment just linked is removed again;
- the same content pushed again is a success (PostgreSQL retries after a crash between
  our exit and its own bookkeeping); different content under a stored name is refused
  (``PushRefused``): that is another cluster, or a timeline mix-up, and never overwritten;
- a failed write (disk full, permission) removes its temporary files: nothing partial is
  visible, and the exception says what failed (``PushFailed``).

Only the standard library: it starts in a few tens of milliseconds, as the ``postgres``
OS user, with any Python 3.11 that can read ``plugins/``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opsdag.backups.wal_names import is_archivable

WAL_DIR = "wal"
CHECKSUM_SUFFIX = ".sha256"
_CHUNK = 1 << 20


class PushRefused(RuntimeError):
    """A different file is already archived under this name: kept as it is, the push fails."""


class PushFailed(RuntimeError):
    """The file could not be stored (disk full, permission, missing source): nothing was left behind."""


@dataclass(frozen=True)
class PushResult:
    name: str
    bytes: int
    sha256: str
    status: str  # "archived" | "already archived"
    path: Path


def archive_dir(root: Any, database: str) -> Any:
    """``<backups root>/<database>/wal``: where a database's WAL archive lives.

    ``root`` is a local path (str or Path: a Path comes back) or an ObjectStoragePath (S3:
    the same kind comes back, see ``wal_push_remote``)."""
    return (Path(root) if isinstance(root, str) else root) / database / WAL_DIR


def check_wal_name(name: str) -> None:
    """ValueError unless ``name`` is a bare WAL file name PostgreSQL archives."""
    if not is_archivable(name) or name != os.path.basename(name):
        raise ValueError(
            f"{name!r} is not a WAL file name PostgreSQL archives (like 000000010000000000000002)"
        )


def checksum_line(digest: str, name: str) -> str:
    return f"{digest}  {name}\n"


def read_checksum(directory: Any, name: str) -> str | None:
    """The sha256 stored next to ``name`` at archiving, or None."""
    try:
        text = (directory / f"{name}{CHECKSUM_SUFFIX}").read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    digest = text.split(maxsplit=1)[0] if text.strip() else ""
    return digest if len(digest) == 64 else None


def sha256_file(path: Any) -> tuple[int, str]:
    """Size and sha256 of a local file (Path or str) or of an object (ObjectStoragePath)."""
    digest = hashlib.sha256()
    size = 0
    with (Path(path) if isinstance(path, str) else path).open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def push(source: Path | str, name: str, directory: Path | str) -> PushResult:
    """Store ``source`` as ``directory/name`` (and its ``.sha256``), durably and at most once."""
    check_wal_name(name)
    directory, source = Path(directory), Path(source)
    target = directory / name
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PushFailed(f"cannot create the archive directory {directory}: {exc.strerror or exc}") from exc
    if target.exists():
        return _compare(source, target, name)
    tmp = directory / f".{name}.{os.getpid()}.tmp"
    tmp_sum = directory / f".{name}{CHECKSUM_SUFFIX}.{os.getpid()}.tmp"
    linked = False
    try:
        size, digest = _copy(source, tmp)
        _write_synced(tmp_sum, checksum_line(digest, name).encode())  # room for it before the segment shows
        try:
            os.link(tmp, target)  # fails if the name exists: never overwrites
        except FileExistsError:
            return _compare(source, target, name)  # another push won the race
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            os.rename(tmp, target)  # a file system without hard links
        linked = True
        os.replace(tmp_sum, directory / f"{name}{CHECKSUM_SUFFIX}")
        _fsync_dir(directory)
        linked = False  # complete: keep it
    except FileNotFoundError as exc:
        if not source.exists():
            raise PushFailed(f"{source} does not exist: nothing to archive") from exc
        raise PushFailed(f"archiving {name} into {directory} failed: {exc}") from exc
    except OSError as exc:
        raise PushFailed(f"archiving {name} into {directory} failed: {exc.strerror or exc}") from exc
    finally:
        for leftover in (tmp, tmp_sum, target) if linked else (tmp, tmp_sum):
            with contextlib.suppress(OSError):
                leftover.unlink()
    return PushResult(name, size, digest, "archived", target)


def _compare(source: Path, target: Path, name: str) -> PushResult:
    """An archived name pushed again: success if the bytes are the same, else refused."""
    try:
        size, digest = sha256_file(source)
        stored_size, stored = sha256_file(target)
    except OSError as exc:
        raise PushFailed(
            f"cannot compare {source} with the archived {target}: {exc.strerror or exc}"
        ) from exc
    if digest != stored:
        raise PushRefused(
            f"{target} is already archived with different content (stored {stored_size} bytes, sha256 "
            f"{stored[:16]}...; pushed {size} bytes, sha256 {digest[:16]}...): kept as it is. Is another "
            "server archiving under this database name?"
        )
    sums = target.with_name(f"{name}{CHECKSUM_SUFFIX}")
    if read_checksum(target.parent, name) != digest:  # a crash between the two renames, long ago
        tmp = target.with_name(f".{name}{CHECKSUM_SUFFIX}.{os.getpid()}.tmp")
        try:
            _write_synced(tmp, checksum_line(digest, name).encode())
            os.replace(tmp, sums)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
    return PushResult(name, size, digest, "already archived", target)


def _copy(source: Path, tmp: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(source, "rb") as src, open(tmp, "xb") as dst:
        while chunk := src.read(_CHUNK):
            dst.write(chunk)
            digest.update(chunk)
            size += len(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    return size, digest.hexdigest()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

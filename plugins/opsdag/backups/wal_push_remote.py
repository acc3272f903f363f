"""Archive one WAL file into object storage (S3): ``wal push --storage s3://... --conn-id ID``.

The same promise as the local push (``wal_push``): exit 0 only once the segment and its
sha256 are stored; the same bytes pushed again are a success; different bytes under a
stored name are refused (``PushRefused``) and never overwritten; a failed write leaves no
segment (``PushFailed``). Object stores have no rename, so atomicity comes from the store:
an object appears whole when its PUT completes, or not at all.

Order: **the checksum object first, the segment second.** A reader (the backup DAG's
continuity check, a restore) treats a segment as archived when the segment object exists,
and then reads its ``.sha256``; written in this order, the checksum is always there when the
segment is. The reverse order leaves a window where a segment is visible without its
checksum, which the continuity check reports as corrupt. The cost of this order is the
opposite leftover: a push that dies between the two PUTs leaves a ``.sha256`` without its
segment. Readers ignore it (``list_archive`` lists segments, not checksums), the retried push
rewrites it, and WAL retention removes such orphans once they are old (never a young one,
which may be a push in progress).

The segment's PUT is conditional (``If-None-Match: *``, s3fs's ``mode="create"``): if another
push stored the name in between, S3 answers 412 and the bytes are compared, as for a name
found up front. Only the checksum of a name whose segment is not stored is ever rewritten.

Credentials come only from the Airflow connection (``--conn-id``): this path imports
Airflow (a few seconds per segment); the local path stays stdlib-only and fast.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

from opsdag.backups.wal_push import (
    CHECKSUM_SUFFIX,
    PushFailed,
    PushRefused,
    PushResult,
    archive_dir,
    check_wal_name,
    checksum_line,
    read_checksum,
    sha256_file,
)


def remote_archive_dir(url: str, conn_id: str, database: str) -> Any:
    """``<url>/<database>/wal`` as an ObjectStoragePath through the Airflow connection ``conn_id``."""
    from airflow.sdk import ObjectStoragePath

    return archive_dir(ObjectStoragePath(url, conn_id=conn_id), database)


def push_remote(source: Path | str, name: str, directory: Any) -> PushResult:
    """Store ``source`` as ``directory/name`` on an object store, its ``.sha256`` first."""
    check_wal_name(name)
    source = Path(source)
    target = directory / name
    try:
        data = source.read_bytes()
    except FileNotFoundError as exc:
        raise PushFailed(f"{source} does not exist: nothing to archive") from exc
    except OSError as exc:
        raise PushFailed(f"cannot read {source}: {exc.strerror or exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    where = f"{directory.protocol}://{directory.path}"
    try:
        directory.fs.invalidate_cache(directory.path)
        if target.exists():
            return _compare(data, digest, target, directory, name)
        _put_checksum(directory, name, digest)
        try:
            directory.fs.pipe_file(target.path, data, mode="create")  # If-None-Match: *
        except FileExistsError:
            return _compare(data, digest, target, directory, name)  # another push won the race
        except BaseException:
            _remove_orphan_checksum(directory, target, name)
            raise
    except (PushRefused, PushFailed):
        raise
    except Exception as exc:  # botocore, s3fs and connection errors alike: not stored
        raise PushFailed(f"archiving {name} into {where} failed: {_reason(exc)}") from exc
    return PushResult(name, len(data), digest, "archived", target)


def _put_checksum(directory: Any, name: str, digest: str) -> None:
    path = directory / f"{name}{CHECKSUM_SUFFIX}"
    directory.fs.pipe_file(path.path, checksum_line(digest, name).encode())


def _remove_orphan_checksum(directory: Any, target: Any, name: str) -> None:
    """After a failed segment PUT: the checksum goes too, unless a segment is stored after all."""
    with contextlib.suppress(Exception):
        directory.fs.invalidate_cache(directory.path)
        if not target.exists():
            directory.fs.rm_file((directory / f"{name}{CHECKSUM_SUFFIX}").path)


def _compare(data: bytes, digest: str, target: Any, directory: Any, name: str) -> PushResult:
    """A stored name pushed again: success if the stored bytes are the same, else refused."""
    stored_size, stored = sha256_file(target)
    if stored != digest:
        raise PushRefused(
            f"{directory.protocol}://{target.path} is already archived with different content (stored "
            f"{stored_size} bytes, sha256 {stored[:16]}...; pushed {len(data)} bytes, sha256 "
            f"{digest[:16]}...): kept as it is. Is another server archiving under this database name?"
        )
    if read_checksum(directory, name) != digest:  # a push that died between its two PUTs, long ago
        _put_checksum(directory, name, digest)
    return PushResult(name, len(data), digest, "already archived", target)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]

"""Is a failed backup step the storage's fault (full, read-only, refusing writes)? Say so, naming it.

A disk that fills up during a dump shows as pg_dump's "could not write to file ...: No space
left on device", or an ``OSError`` with ``ENOSPC`` from our own writes; an object store that
refuses a PUT shows as a botocore/s3fs error. The user needs the same three things from
each: which storage, what it said, and that nothing of the backup was kept. No Airflow
import.
"""

from __future__ import annotations

import errno

STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
STORAGE_WORDS = (
    "No space left on device",
    "Disk quota exceeded",
    "Read-only file system",
    "Permission denied",
    "File too large",
)


def storage_problem(exc: BaseException, *, remote: bool = False) -> str | None:
    """The storage's complaint in ``exc`` (first line), or None when the failure is something else.

    ``remote``: the exception came from writing to an object store, where every failure of a
    write is the store's (connection refused, no such bucket, access denied, ...).
    """
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return None
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        return exc.strerror or str(exc)
    text = str(exc)
    for words in STORAGE_WORDS:
        if words in text:
            return words
    if remote:
        return (text.strip().splitlines() or [type(exc).__name__])[0][:300]
    return None


def storage_refused_message(
    what: str, url: str, problem: str, outcome: str = "nothing of it was kept"
) -> str:
    return (
        f"{what} failed: the storage {url} refused the write ({problem}); {outcome}. "
        "Free space there (or fix its permissions / connection) and run again"
    )

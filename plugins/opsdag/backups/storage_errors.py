"""Is a failed backup step the storage's fault (full, read-only, refusing writes)? Say so, naming it.

A disk that fills up during a dump shows as pg_dump's "could not write to file ...: No space
left on device", or an ``OSError`` with ``ENOSPC`` from our own writes; an object store that
refuses a PUT shows as a botocore/s3fs error. The user needs the same three things from
each: which storage, what it said, and that nothing of the backup was kept. No Airflow
import.
"""

from __future__ import annotations

import errno
import re

FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}
DENIED_ERRNOS = {errno.EACCES, errno.EPERM}
FULL_WORDS = ("No space left on device", "Disk quota exceeded", "Read-only file system", "File too large")
# pg_dump / pg_basebackup writing their output; a bare "Permission denied" may be a socket or a binary
DENIED_WRITE = re.compile(
    r"could not (?:write|open output file|create (?:directory|file))[^\n]*Permission denied"
)


def storage_problem(exc: BaseException, *, remote: bool = False, under: str | None = None) -> str | None:
    """The storage's complaint in ``exc`` (first line), or None when the failure is something else.

    ``remote``: the exception came from writing to an object store, where every failure of a
    write is the store's (connection refused, no such bucket, access denied, ...). ``under``:
    the local directory being written; a permission error counts only on a file below it.
    """
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return None
    if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
        return exc.strerror or str(exc)
    if isinstance(exc, OSError) and exc.errno in DENIED_ERRNOS:
        inside = under is not None and str(exc.filename or "").startswith(under)
        return (exc.strerror or str(exc)) if inside or remote else None
    text = str(exc)
    for words in FULL_WORDS:
        if words in text:
            return words
    if DENIED_WRITE.search(text):
        return "Permission denied"
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

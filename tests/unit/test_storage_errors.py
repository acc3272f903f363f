"""Which failures are the storage's: a table of exceptions and what the user is told."""

from __future__ import annotations

import errno

import pytest

from opsdag.backups.pg import ToolError
from opsdag.backups.storage_errors import storage_problem, storage_refused_message

FULL = 'pg_dump: error: could not write to file "/b/x/.partial-1/data/3.dat.gz": No space left on device'
DENIED = 'pg_dump: error: could not create directory "/b/x/.partial-1/data": Permission denied'
SOCKET = 'connection to server on socket "/run/pg/.s.PGSQL.5432" failed: Permission denied'


@pytest.mark.parametrize(
    ("exc", "kwargs", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/b/x"), {}, "No space left on device"),
        (OSError(errno.EROFS, "Read-only file system", "/b/x"), {}, "Read-only file system"),
        (ToolError(FULL), {}, "No space left on device"),
        (ToolError(DENIED), {}, "Permission denied"),
        (ToolError(SOCKET), {}, None),  # the server's socket, not the storage
        (ToolError("pg_dump: error: query failed: ERROR:  permission denied for table t"), {}, None),
        (
            PermissionError(errno.EACCES, "Permission denied", "/b/x/.partial-1/capture.json"),
            {"under": "/b"},
            "Permission denied",
        ),
        (
            PermissionError(errno.EACCES, "Permission denied", "/usr/lib/postgresql/15/bin/pg_dump"),
            {"under": "/b"},
            None,
        ),
        (
            RuntimeError("NoSuchBucket: The specified bucket does not exist\nmore"),
            {"remote": True},
            "NoSuchBucket: The specified bucket does not exist",
        ),
        (RuntimeError("NoSuchBucket"), {}, None),  # not while writing to an object store
        (KeyboardInterrupt(), {"remote": True}, None),
    ],
)
def test_storage_problem(exc, kwargs, expected):
    assert storage_problem(exc, **kwargs) == expected


def test_the_message_names_the_storage_and_what_was_kept():
    message = storage_refused_message("backup b1 of db", "s3://bucket/backups", "No space left on device")
    assert message.startswith("backup b1 of db failed: the storage s3://bucket/backups refused the write")
    assert "nothing of it was kept" in message and "run again" in message

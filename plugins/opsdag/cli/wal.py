"""``python -m opsdag wal push PATH NAME``: PostgreSQL's ``archive_command`` (``%p %f``).

In postgresql.conf (see the README's WAL section)::

    archive_mode = on
    archive_command = 'PYTHONPATH=/opt/opsdag/plugins python3 -m opsdag wal push --database demo-db %p %f'
    archive_timeout = 60s

The segment goes to ``<storage>/<database>/wal/<NAME>`` with its sha256 next to it
(``opsdag.backups.wal_push``). ``--database`` is the spec's name (``include/databases/
<name>.yaml``), or ``OPSDAG_WAL_DATABASE``; ``--storage`` is the backups' root, or
``OPSDAG_BACKUPS_DIR``, or opsdag's state directory: the same place the backup DAG reads.
Both go in postgresql.conf because the archiver's environment is the server's.

``--storage s3://bucket/prefix --conn-id ID`` archives into object storage instead
(``opsdag.backups.wal_push_remote``: the sha256 object first, then the segment with a
conditional PUT), with the credentials of the Airflow connection ``ID`` (so Airflow must be
importable there, and each push costs its import: seconds, not milliseconds). The local
path never imports Airflow.

Exit codes: 0 stored (or already stored with the same bytes: PostgreSQL retries); 1 not
stored (a different file holds the name, or the write failed; PostgreSQL keeps the segment
and retries); 2 bad usage (not a WAL name, no database, a remote storage URL without
--conn-id). Runs on the database host for every segment: to a local directory only the
standard library is imported, never Airflow.
"""

from __future__ import annotations

import argparse
import os
import sys

from opsdag.cli import EXIT_OK, EXIT_PROBLEMS, UsageError

DATABASE_ENV = "OPSDAG_WAL_DATABASE"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "wal",
        help="WAL archiving: the archive_command of a database's server",
        description="Continuous WAL archiving into the backups' storage.",
    )
    commands = parser.add_subparsers(dest="wal_command", metavar="WAL_COMMAND")
    push = commands.add_parser(
        "push",
        help="archive one WAL file (archive_command = '... wal push --database NAME %%p %%f')",
        description="Store one WAL file durably in <storage>/<database>/wal/ with its sha256.",
    )
    push.add_argument("path", help="the file to archive (%%p)")
    push.add_argument("name", help="its WAL file name (%%f)")
    push.add_argument("--database", help=f"the database spec's name (default: ${DATABASE_ENV})")
    push.add_argument(
        "--storage",
        help="the backups' root directory (default: $OPSDAG_BACKUPS_DIR, else the state directory), "
        "or an s3:// URL with --conn-id",
    )
    push.add_argument(
        "--conn-id", help="the Airflow connection of an s3:// storage (its credentials and endpoint)"
    )
    push.add_argument("--quiet", "-q", action="store_true", help="print nothing on success")
    push.set_defaults(run=run_push)
    parser.set_defaults(run=_no_command(parser))


def _no_command(parser: argparse.ArgumentParser):
    def run(_args: argparse.Namespace) -> int:
        raise UsageError("say what to do: wal push PATH NAME")

    return run


def storage_root(value: str | None) -> str:
    """The local root the archive goes under (a ``file://`` URL is taken as its path)."""
    if value is None:
        from opsdag import paths

        return str(paths.backups_root())
    if value.startswith("file://"):
        value = value[len("file://") :]
    if "://" in value:
        raise UsageError(f"{value}: WAL archiving writes to a local or mounted directory, not a URL")
    if not value.startswith("/"):
        raise UsageError(f"{value}: give the storage as an absolute path")
    return value


def is_remote(storage: str | None) -> bool:
    return bool(storage) and "://" in storage and not storage.startswith("file://")


def remote_directory(storage: str, conn_id: str | None, database: str):
    """The archive on object storage and the function that pushes there (imports Airflow)."""
    if not conn_id:
        raise UsageError(
            f"{storage}: without --conn-id WAL archiving writes to a local directory, not a URL; "
            "give --conn-id (the Airflow connection with the object storage's credentials)"
        )
    # Airflow logs "credentials retrieved from extra" at INFO on every push: noise in the
    # server's log. Set here, in the short-lived `opsdag wal push` process, never in a library
    # function: a long-lived caller's (a worker's, a test's) later Airflow processes inherit it.
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    from opsdag.backups.wal_push_remote import push_remote, remote_archive_dir

    try:
        return remote_archive_dir(storage, conn_id, database), push_remote
    except ValueError as exc:
        raise UsageError(f"{storage}: {exc}") from exc


def run_push(args: argparse.Namespace) -> int:
    from opsdag.backups.wal_push import PushFailed, PushRefused, archive_dir, push

    database = args.database or os.environ.get(DATABASE_ENV)
    if not database:
        raise UsageError(f"which database is this? give --database NAME (or set {DATABASE_ENV})")
    if "/" in database or database.startswith("."):
        raise UsageError(f"{database!r} is not a database spec name")
    if is_remote(args.storage):
        directory, pusher = remote_directory(args.storage, args.conn_id, database)
    else:
        if args.conn_id:
            raise UsageError(
                f"--conn-id is for an s3:// storage, not the directory {args.storage or '(default)'}"
            )
        directory, pusher = archive_dir(storage_root(args.storage), database), push
    try:
        result = pusher(args.path, args.name, directory)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    except PushRefused as exc:
        print(f"opsdag wal push: REFUSED {args.name}: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    except PushFailed as exc:
        print(f"opsdag wal push: FAILED {args.name}: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    if not args.quiet:
        digest = result.sha256[:16]
        print(f"opsdag wal push: {result.status} {result.name} ({result.bytes} bytes, sha256 {digest}...)")
    return EXIT_OK

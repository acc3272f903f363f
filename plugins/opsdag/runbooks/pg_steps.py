"""The PostgreSQL steps of a runbook (pg_connections, terminate_idle_connections), given a connection.

``server_of`` says which Airflow connection and database a step means (a database spec's
name resolves through include/databases/); ``diagnose`` and ``terminate_idle`` take an
open psycopg connection (``opsdag.backups.pg``'s ``target_from_connection(...).connect()``)
and call :mod:`opsdag.runbooks.pg_connections`. The idle connections considered are those
of the connected database only: the server's other databases belong to other owners.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opsdag.runbooks.pg_connections import (
    ConnectionsSnapshot,
    TerminationResult,
    connections_by_state,
    idle_to_terminate,
    read_backends,
    terminate,
)


class UnknownDatabase(LookupError):
    """A step names a database spec that include/databases/ does not have."""


def server_of(step: Any, include: Path | None = None) -> tuple[str, str | None]:
    """``(connection id, database name or None for the connection's own)`` of a step."""
    if step.connection_id:
        return step.connection_id, None
    from opsdag.paths import include_dir
    from opsdag.spec.loader import load_kind

    specs = load_kind(include or include_dir(), "databases").specs
    if step.database not in specs:
        known = ", ".join(sorted(specs)) or "none"
        raise UnknownDatabase(f"no database spec {step.database!r} in include/databases/ (known: {known})")
    spec = specs[step.database]
    return spec.connection_id, spec.database


def diagnose(conn: Any) -> ConnectionsSnapshot:
    return connections_by_state(conn)


def terminate_idle(conn: Any, step: Any, *, dry_run: bool) -> TerminationResult:
    """Plan the idle connections of the connected database the step allows, then end them (or list them)."""
    backends = read_backends(conn)
    database = conn.execute("SELECT current_database()").fetchone()[0]
    targets = idle_to_terminate(
        backends.rows,
        older_than=step.older_than,
        now=backends.now,
        keep_own_pid=backends.own_pid,
        database=database,
        user=step.user,
        idle_in_transaction=step.idle_in_transaction,
    )
    return terminate(conn, targets, dry_run=dry_run)


def snapshot_detail(snapshot: ConnectionsSnapshot, top: int = 5) -> str:
    """The summary and the largest groups: ``... ; demo/app: 80 idle, ...``."""
    groups = ", ".join(
        f"{g.database or '-'}/{g.user or '-'}: {g.count} {g.state}" for g in snapshot.by_database_user[:top]
    )
    return snapshot.summary() + (f"; largest: {groups}" if groups else "")

"""PostgreSQL connections by state, and terminating the idle ones (DatabaseConnectionsExhausted).

Three parts, so that the decision is tested apart from the server:

- ``connections_by_state(conn)``: pg_stat_activity counted by state per database and user,
  against ``max_connections`` and its reserved slots, for the diagnostics report;
- ``idle_to_terminate(rows, ...)``: the pure planner, which client backends may go;
- ``terminate(conn, targets, dry_run=...)``: ``pg_terminate_backend`` for each target,
  re-checked in the same statement, so a connection that woke up meanwhile is spared.

``conn`` is a psycopg 3 connection opened the project's way,
``target_from_connection(BaseHook.get_connection(conn_id)).connect()``
(``opsdag.backups.pg``): the password reaches libpq in process, never a command line or a
log. Its role needs ``pg_signal_backend`` (or superuser) to terminate, and
``pg_read_all_stats`` to see other roles' states (otherwise they count as ``unknown``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from opsdag.format import duration

CLIENT_BACKEND = "client backend"
IDLE = "idle"
IDLE_IN_TRANSACTION = ("idle in transaction", "idle in transaction (aborted)")
UNKNOWN_STATE = "unknown"  # state is NULL: another role's session seen without pg_read_all_stats

Outcome = Literal["terminated", "spared", "gone", "failed", "planned"]


@dataclass(frozen=True)
class Backend:
    """One row of pg_stat_activity: the columns the planner and the report need."""

    pid: int
    backend_type: str
    database: str | None = None
    user: str | None = None
    application_name: str = ""
    client_addr: str | None = None
    state: str | None = None
    state_change: datetime | None = None
    backend_start: datetime | None = None


@dataclass(frozen=True)
class Backends:
    """pg_stat_activity as read by the backend ``own_pid`` at ``now`` (the server's clock)."""

    now: datetime
    own_pid: int
    rows: list[Backend]


@dataclass(frozen=True)
class StateCount:
    database: str | None
    user: str | None
    state: str
    count: int


@dataclass(frozen=True)
class ConnectionsSnapshot:
    """Client connections against ``max_connections``; other backend types apart (own limits).

    Only client backends take ``max_connections`` slots: WAL senders, autovacuum and
    background workers have their own limits, so they are listed but not counted.
    ``client_backends`` includes the session that took the snapshot.
    """

    taken_at: datetime
    max_connections: int
    superuser_reserved: int
    reserved: int  # reserved_connections (PostgreSQL 16+), 0 before
    client_backends: int
    by_state: dict[str, int]
    by_database_user: list[StateCount]
    other_backends: dict[str, int] = field(default_factory=dict)

    @property
    def available(self) -> int:
        """Slots still open to ordinary roles (the reserved ones are for privileged roles)."""
        return max(0, self.max_connections - self.superuser_reserved - self.reserved - self.client_backends)

    def summary(self) -> str:
        """``42 of 100 connections in use (3 reserved for superusers, 55 free): 30 idle, 12 active``."""
        states = ", ".join(f"{n} {state}" for state, n in sorted(self.by_state.items(), key=lambda s: -s[1]))
        reserved = f"{self.superuser_reserved} reserved for superusers"
        if self.reserved:
            reserved += f", {self.reserved} for pg_use_reserved_connections"
        return (
            f"{self.client_backends} of {self.max_connections} connections in use "
            f"({reserved}, {self.available} free): {states or 'none'}"
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["taken_at"] = self.taken_at.isoformat()
        data["available"] = self.available
        data["summary"] = self.summary()
        return data


def count_connections(
    rows: Iterable[Backend],
    *,
    now: datetime,
    max_connections: int,
    superuser_reserved: int,
    reserved: int = 0,
) -> ConnectionsSnapshot:
    """Count ``rows`` by state, and by database, user and state (largest first)."""
    rows = list(rows)
    clients = [r for r in rows if r.backend_type == CLIENT_BACKEND]
    others = Counter(r.backend_type for r in rows if r.backend_type != CLIENT_BACKEND)
    by_state = Counter(r.state or UNKNOWN_STATE for r in clients)
    groups = Counter((r.database, r.user, r.state or UNKNOWN_STATE) for r in clients)
    by_database_user = [
        StateCount(database, user, state, n)
        for (database, user, state), n in sorted(
            groups.items(), key=lambda g: (-g[1], g[0][0] or "", g[0][1] or "", g[0][2])
        )
    ]
    return ConnectionsSnapshot(
        taken_at=now,
        max_connections=max_connections,
        superuser_reserved=superuser_reserved,
        reserved=reserved,
        client_backends=len(clients),
        by_state=dict(by_state),
        by_database_user=by_database_user,
        other_backends=dict(sorted(others.items())),
    )


# -- the planner ---------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A backend chosen to be terminated, and why (with the numbers)."""

    pid: int
    database: str | None
    user: str | None
    application_name: str
    client_addr: str | None
    state: str
    state_change: datetime
    backend_start: datetime | None
    idle_seconds: float
    older_than: timedelta  # the limit, re-checked by ``terminate``
    reason: str


def idle_to_terminate(
    rows: Iterable[Backend],
    *,
    older_than: timedelta,
    now: datetime,
    keep_own_pid: int | None,
    database: str | None = None,
    user: str | None = None,
    idle_in_transaction: bool = False,
) -> list[Target]:
    """The client backends idle for longer than ``older_than`` at ``now``, the oldest first.

    Never the caller's own backend (``keep_own_pid``), never a WAL sender, replication or
    background worker (only ``client backend`` rows qualify), never a backend that is
    active. ``idle in transaction`` sessions hold locks and snapshots a person may want
    to look at first: they qualify only with ``idle_in_transaction=True``. Exactly at the
    limit is not older than it. ``now`` should be the server's clock (``read_backends``).
    """
    if older_than <= timedelta(0):
        raise ValueError(f"older_than must be positive, got {older_than}")
    if now.tzinfo is None:
        raise ValueError("now needs its time zone (pg_stat_activity's times have theirs)")
    states = {IDLE, *(IDLE_IN_TRANSACTION if idle_in_transaction else ())}
    limit = older_than.total_seconds()
    chosen = []
    for row in rows:
        if row.backend_type != CLIENT_BACKEND or row.pid == keep_own_pid:
            continue
        if row.state not in states or row.state_change is None:
            continue
        if (database is not None and row.database != database) or (user is not None and row.user != user):
            continue
        idle = (now - row.state_change).total_seconds()
        if idle <= limit:
            continue
        chosen.append(
            Target(
                pid=row.pid,
                database=row.database,
                user=row.user,
                application_name=row.application_name,
                client_addr=row.client_addr,
                state=row.state,
                state_change=row.state_change,
                backend_start=row.backend_start,
                idle_seconds=idle,
                older_than=older_than,
                reason=f"{row.state} for {duration(idle)} > {duration(limit)}",
            )
        )
    return sorted(chosen, key=lambda t: (-t.idle_seconds, t.pid))


# -- I/O -----------------------------------------------------------------------------

_BACKENDS_SQL = """
SELECT pid, backend_type, datname, usename, coalesce(application_name, ''), client_addr::text,
       state, state_change, backend_start
FROM pg_stat_activity ORDER BY pid
"""
_SETTINGS_SQL = """
SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int,
       coalesce(current_setting('reserved_connections', true), '0')::int
"""


def read_backends(conn: Any) -> Backends:
    """pg_stat_activity now (a fresh read even inside an open transaction)."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    now, own_pid = conn.execute("SELECT clock_timestamp(), pg_backend_pid()").fetchone()
    rows = [Backend(*row) for row in conn.execute(_BACKENDS_SQL).fetchall()]
    return Backends(now=now, own_pid=own_pid, rows=rows)


def connections_by_state(conn: Any) -> ConnectionsSnapshot:
    """The diagnostics: connections by state per database and user, against the server's limits."""
    backends = read_backends(conn)
    max_connections, superuser_reserved, reserved = conn.execute(_SETTINGS_SQL).fetchone()
    return count_connections(
        backends.rows,
        now=backends.now,
        max_connections=max_connections,
        superuser_reserved=superuser_reserved,
        reserved=reserved,
    )


@dataclass(frozen=True)
class TargetOutcome:
    pid: int
    outcome: Outcome
    reason: str
    target: Target


@dataclass(frozen=True)
class TerminationResult:
    """What ``terminate`` did to each target; ``dry_run`` lists them as ``planned``."""

    dry_run: bool
    outcomes: list[TargetOutcome]

    def pids(self, outcome: Outcome) -> list[int]:
        return [o.pid for o in self.outcomes if o.outcome == outcome]

    @property
    def changed(self) -> bool:
        return bool(self.pids("terminated"))

    def summary(self) -> str:
        """``terminated 3 idle connection(s); spared 1, gone 0, failed 0``."""
        if self.dry_run:
            return f"dry run: would terminate {len(self.outcomes)} idle connection(s); nothing was changed"
        counts = Counter(o.outcome for o in self.outcomes)
        return (
            f"terminated {counts['terminated']} idle connection(s); spared {counts['spared']}, "
            f"gone {counts['gone']}, failed {counts['failed']}"
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for item in data["outcomes"]:
            target = item["target"]
            for key in ("state_change", "backend_start"):
                target[key] = target[key].isoformat() if target[key] is not None else None
            target["older_than"] = target["older_than"].total_seconds()
        data["summary"] = self.summary()
        return data


_TERMINATE_SQL = """
SELECT a.pid IS NOT NULL, a.state, extract(epoch FROM clock_timestamp() - a.state_change)::float8,
       CASE WHEN a.backend_type = 'client backend'
             AND a.state = ANY(%(states)s)
             AND a.state_change < clock_timestamp() - %(older_than)s::interval
             AND a.pid <> pg_backend_pid()
            THEN pg_terminate_backend(a.pid) END
FROM (SELECT %(pid)s::integer AS pid) AS wanted
LEFT JOIN pg_stat_activity AS a ON a.pid = wanted.pid
  AND (%(backend_start)s::timestamptz IS NULL OR a.backend_start = %(backend_start)s::timestamptz)
"""


def terminate(conn: Any, targets: Iterable[Target], *, dry_run: bool) -> TerminationResult:
    """Terminate each target still idle for longer than its limit, checked in the same statement.

    Per pid: ``terminated`` (signalled), ``spared`` (active again, or idle for less than
    the limit since), ``gone`` (exited, or its pid now belongs to a newer backend),
    ``failed`` (the server refused, e.g. no ``pg_signal_backend``). ``dry_run`` runs no
    SQL and lists every target as ``planned``.
    """
    import psycopg

    targets = list(targets)
    if dry_run:
        planned = [TargetOutcome(t.pid, "planned", f"would terminate: {t.reason}", t) for t in targets]
        return TerminationResult(dry_run=True, outcomes=planned)
    outcomes: list[TargetOutcome] = []
    for target in targets:
        states = [IDLE, *IDLE_IN_TRANSACTION] if target.state in IDLE_IN_TRANSACTION else [IDLE]
        params = {
            "pid": target.pid,
            "states": states,
            "older_than": target.older_than,
            "backend_start": target.backend_start,
        }
        try:
            with conn.transaction():  # a failure rolls back this pid's statement only
                conn.execute("SELECT pg_stat_clear_snapshot()")
                present, state, idle, signalled = conn.execute(_TERMINATE_SQL, params).fetchone()
        except psycopg.Error as exc:
            reason = (getattr(exc.diag, "message_primary", None) or str(exc)).strip()
            outcomes.append(TargetOutcome(target.pid, "failed", reason, target))
            if conn.closed or getattr(conn, "broken", False):
                lost = "not tried: the connection was lost"
                outcomes += [TargetOutcome(t.pid, "failed", lost, t) for t in targets[len(outcomes) :]]
                break
            continue
        limit = target.older_than.total_seconds()
        outcomes.append(TargetOutcome(target.pid, *_outcome(present, state, idle, signalled, limit), target))
    return TerminationResult(dry_run=False, outcomes=outcomes)


def _outcome(
    present: bool, state: str | None, idle: float | None, signalled: bool | None, limit: float
) -> tuple[Outcome, str]:
    """The outcome of one pid from what the re-checking statement saw."""
    if not present:
        return "gone", "no longer connected (or its pid belongs to a newer connection)"
    if signalled:
        return "terminated", f"terminated: {state} for {duration(idle)} > {duration(limit)}"
    if signalled is False:
        return "gone", "exited before it could be signalled"
    if state not in (IDLE, *IDLE_IN_TRANSACTION):
        return "spared", f"spared: now {state or UNKNOWN_STATE}"
    return "spared", f"spared: {state} for only {duration(idle)} (limit {duration(limit)})"

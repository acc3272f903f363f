"""Which PostgreSQL backends the DatabaseConnectionsExhausted runbook may terminate, and the counts
its diagnostics report: tables of pg_stat_activity rows, no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from opsdag.runbooks.pg_connections import (
    Backend,
    Target,
    TargetOutcome,
    TerminationResult,
    count_connections,
    idle_to_terminate,
    terminate,
)

NOW = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)
OWN_PID = 100


def row(pid: int, state: str | None = "idle", idle_s: float = 600, **kw) -> Backend:
    """A client backend of app@shop, ``idle_s`` seconds in ``state`` at NOW."""
    values = {"backend_type": "client backend", "database": "shop", "user": "app"} | kw
    return Backend(pid=pid, state=state, state_change=NOW - timedelta(seconds=idle_s), **values)


def plan(rows, older_than=timedelta(minutes=5), **kw) -> list[int]:
    chosen = idle_to_terminate(rows, older_than=older_than, now=NOW, keep_own_pid=OWN_PID, **kw)
    return [t.pid for t in chosen]


CASES = [
    # (what, rows, keyword arguments, the pids chosen)
    ("idle past the limit is chosen", [row(1)], {}, [1]),
    ("idle under the limit stays", [row(1, idle_s=299)], {}, []),
    ("exactly at the limit is not older than it", [row(1, idle_s=300)], {}, []),
    ("a microsecond past the limit is", [row(1, idle_s=300.000001)], {}, [1]),
    ("the caller's own backend never", [row(OWN_PID, idle_s=9999)], {}, []),
    ("active never", [row(1, "active", idle_s=9999)], {}, []),
    ("fastpath function call never", [row(1, "fastpath function call")], {}, []),
    ("a NULL state (no pg_read_all_stats) never", [row(1, None)], {}, []),
    ("a NULL state_change never", [Backend(1, "client backend", state="idle")], {}, []),
    ("idle in transaction is left alone by default", [row(1, "idle in transaction")], {}, []),
    ("... and its aborted form", [row(1, "idle in transaction (aborted)")], {}, []),
    (
        "idle in transaction when asked, with its aborted form",
        [row(1, "idle in transaction"), row(2, "idle in transaction (aborted)"), row(3, "active")],
        {"idle_in_transaction": True},
        [1, 2],
    ),
    ("a WAL sender never", [row(1, backend_type="walsender")], {}, []),
    ("a logical replication worker never", [row(1, backend_type="logical replication worker")], {}, []),
    ("a background worker never", [row(1, backend_type="pg_cron launcher")], {}, []),
    ("autovacuum never", [row(1, backend_type="autovacuum worker")], {}, []),
    ("a parallel worker never", [row(1, backend_type="parallel worker")], {}, []),
    (
        "restricted to a database",
        [row(1), row(2, database="billing")],
        {"database": "billing"},
        [2],
    ),
    ("restricted to a user", [row(1), row(2, user="report")], {"user": "report"}, [2]),
    (
        "restricted to both",
        [row(1, user="report"), row(2, database="billing"), row(3, database="billing", user="report")],
        {"database": "billing", "user": "report"},
        [3],
    ),
    (
        "oldest first, then by pid",
        [row(5, idle_s=400), row(3, idle_s=900), row(4, idle_s=400)],
        {},
        [3, 4, 5],
    ),
]


@pytest.mark.parametrize(("what", "rows", "kwargs", "expected"), CASES, ids=[c[0] for c in CASES])
def test_which_backends_are_chosen(what, rows, kwargs, expected):
    assert plan(rows, **kwargs) == expected


def test_a_target_says_why_with_its_numbers_and_carries_its_limit():
    started = NOW - timedelta(hours=2)
    [target] = idle_to_terminate(
        [row(7, idle_s=134, application_name="api", backend_start=started)],
        older_than=timedelta(minutes=1),
        now=NOW,
        keep_own_pid=None,
    )
    assert target.reason == "idle for 2 min 14 s > 1 min"
    assert (target.idle_seconds, target.older_than) == (134, timedelta(minutes=1))
    assert (target.application_name, target.backend_start) == ("api", started)


@pytest.mark.parametrize(
    ("older_than", "now", "problem"),
    [
        (timedelta(0), NOW, "older_than must be positive"),
        (timedelta(seconds=-1), NOW, "older_than must be positive"),
        (timedelta(minutes=1), NOW.replace(tzinfo=None), "time zone"),
    ],
)
def test_a_limit_or_clock_that_cannot_be_compared_is_refused(older_than, now, problem):
    with pytest.raises(ValueError, match=problem):
        idle_to_terminate([row(1)], older_than=older_than, now=now, keep_own_pid=None)


def test_dry_run_lists_the_targets_and_touches_no_connection():
    targets = idle_to_terminate([row(1), row(2)], older_than=timedelta(minutes=1), now=NOW, keep_own_pid=None)
    result = terminate(object(), targets, dry_run=True)  # no SQL: any object would fail if used
    assert [(o.pid, o.outcome) for o in result.outcomes] == [(1, "planned"), (2, "planned")]
    assert not result.changed
    assert result.summary() == "dry run: would terminate 2 idle connection(s); nothing was changed"
    assert result.to_dict()["outcomes"][0]["target"]["older_than"] == 60.0


def test_a_result_counts_each_outcome():
    target = Target(1, "shop", "app", "", None, "idle", NOW, None, 90, timedelta(minutes=1), "")
    outcomes = [
        TargetOutcome(1, "terminated", "", target),
        TargetOutcome(2, "terminated", "", target),
        TargetOutcome(3, "spared", "", target),
        TargetOutcome(4, "gone", "", target),
    ]
    result = TerminationResult(dry_run=False, outcomes=outcomes)
    assert result.changed and result.pids("terminated") == [1, 2]
    assert result.summary() == "terminated 2 idle connection(s); spared 1, gone 1, failed 0"


def test_connections_are_counted_by_state_database_and_user_against_the_limit():
    rows = [
        row(1),
        row(2),
        row(3, "active"),
        row(4, "idle in transaction", user="report"),
        row(5, None, database="billing"),
        row(6, backend_type="walsender", state="active"),
        Backend(7, "autovacuum launcher"),
    ]
    snapshot = count_connections(rows, now=NOW, max_connections=20, superuser_reserved=3, reserved=2)
    assert snapshot.client_backends == 5
    assert snapshot.by_state == {"idle": 2, "active": 1, "idle in transaction": 1, "unknown": 1}
    assert [(c.database, c.user, c.state, c.count) for c in snapshot.by_database_user] == [
        ("shop", "app", "idle", 2),
        ("billing", "app", "unknown", 1),
        ("shop", "app", "active", 1),
        ("shop", "report", "idle in transaction", 1),
    ]
    assert snapshot.other_backends == {"autovacuum launcher": 1, "walsender": 1}
    assert snapshot.available == 20 - 3 - 2 - 5
    assert snapshot.summary() == (
        "5 of 20 connections in use (3 reserved for superusers, 2 for pg_use_reserved_connections, 10 free): "
        "2 idle, 1 active, 1 idle in transaction, 1 unknown"
    )
    assert snapshot.to_dict()["taken_at"] == NOW.isoformat()


def test_a_full_server_has_no_free_slot_rather_than_a_negative_count():
    rows = [row(i) for i in range(12)]
    snapshot = count_connections(rows, now=NOW, max_connections=10, superuser_reserved=3)
    assert snapshot.available == 0

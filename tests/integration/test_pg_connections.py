# ruff: noqa: F811  (pytest fixtures imported from a helper module are redefined as arguments)
"""Terminating idle PostgreSQL connections on a real server (the session's shared ``pg_server``).

The test holds its own connections to a fresh database: idle ones, one that turns active
between the plan and the termination, one that is used again meanwhile, one that leaves
by itself, and one idle in a transaction. Nothing can be backdated, so the limit is a
second or two and every wait is on a condition with a timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from pg_fixtures import make_db, pg_server, target_for  # noqa: F401
from support.waiting import wait_for

from opsdag.runbooks.pg_connections import connections_by_state, idle_to_terminate, read_backends, terminate

pytestmark = pytest.mark.integration


@pytest.fixture
def db(make_db) -> str:
    return make_db(empty=True)


@pytest.fixture
def admin(pg_server) -> Iterator[psycopg.Connection]:
    """The runbook's own session, on another database (as the runbook's connection would be)."""
    with target_for(pg_server, "postgres").connect() as conn:
        yield conn


@pytest.fixture
def open_conn(pg_server, db) -> Iterator:
    """``open_conn(name)``: a connection to the test's database, closed after the test."""
    opened: list[psycopg.Connection] = []

    def open_one(name: str) -> psycopg.Connection:
        kwargs = target_for(pg_server, db).connect_kwargs() | {"application_name": f"pgconn-test-{name}"}
        conn = psycopg.connect(autocommit=True, **kwargs)
        opened.append(conn)
        return conn

    yield open_one
    for conn in opened:
        conn.close()


def pids_in(admin, pids: list[int], condition: str = "true", limit: timedelta = timedelta(0)) -> set[int]:
    rows = admin.execute(
        f"SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s) AND {condition}"
        " AND (state_change IS NULL OR state_change < clock_timestamp() - %s::interval)",
        (pids, limit),
    ).fetchall()
    return {pid for (pid,) in rows}


def wait_idle(admin, conns: list[psycopg.Connection], limit: timedelta) -> None:
    pids = [c.info.backend_pid for c in conns]
    wait_for(
        lambda: pids_in(admin, pids, "state = 'idle'", limit) == set(pids),
        timeout=30,
        what=f"{len(pids)} connections idle for more than {limit}",
    )


def test_idle_connections_go_and_one_that_woke_up_meanwhile_is_spared(admin, open_conn, db):
    limit = timedelta(seconds=2)
    idle = [open_conn(f"idle-{i}") for i in range(3)]
    busy, used, leaver = open_conn("busy"), open_conn("used"), open_conn("leaver")
    in_tx = open_conn("in-tx")
    in_tx.execute("BEGIN")
    in_tx.execute("SELECT 1")
    everyone = [*idle, busy, used, leaver]
    wait_idle(admin, everyone, limit)

    backends = read_backends(admin)
    targets = idle_to_terminate(
        backends.rows, older_than=limit, now=backends.now, keep_own_pid=backends.own_pid, database=db
    )
    assert {t.pid for t in targets} == {c.info.backend_pid for c in everyone}  # not the one in a transaction

    # Between the plan and the termination: one turns active, one is used, one leaves.
    ended: list[BaseException | None] = []
    sleeping = threading.Thread(target=_sleep_until_cancelled, args=(busy, ended), daemon=True)
    sleeping.start()
    wait_for(lambda: pids_in(admin, [busy.info.backend_pid], "state = 'active'"), what="pg_sleep running")
    used.execute("SELECT 1")
    leaver_pid = leaver.info.backend_pid
    leaver.close()
    wait_for(lambda: not pids_in(admin, [leaver_pid]), what="the closed connection's backend to exit")

    result = terminate(admin, targets, dry_run=False)

    outcome = {o.pid: (o.outcome, o.reason) for o in result.outcomes}
    idle_pids = [c.info.backend_pid for c in idle]
    assert sorted(result.pids("terminated")) == sorted(idle_pids)
    assert outcome[busy.info.backend_pid] == ("spared", "spared: now active")
    assert outcome[used.info.backend_pid][0] == "spared"
    assert outcome[used.info.backend_pid][1].startswith("spared: idle for only ")
    assert outcome[leaver_pid][0] == "gone"
    assert result.changed
    wait_for(lambda: not pids_in(admin, idle_pids), what="the terminated backends to leave pg_stat_activity")
    for conn in idle:
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")

    busy.cancel_safe()
    sleeping.join(timeout=30)
    assert [type(e) for e in ended] == [psycopg.errors.QueryCanceled]
    assert busy.execute("SELECT 1").fetchone() == (1,)  # spared, and still usable
    assert used.execute("SELECT 1").fetchone() == (1,)
    assert in_tx.execute("SELECT 1").fetchone() == (1,)  # idle in transaction: not asked, not touched


def _sleep_until_cancelled(conn: psycopg.Connection, ended: list[BaseException | None]) -> None:
    """Stay active until cancelled; record how the query ended (a thread cannot fail the test)."""
    try:
        conn.execute("SELECT pg_sleep(60)")
        ended.append(None)
    except BaseException as exc:
        ended.append(exc)


def test_idle_in_transaction_goes_only_when_asked(admin, open_conn, db):
    limit = timedelta(seconds=1)
    in_tx = open_conn("in-tx")
    in_tx.execute("BEGIN")
    in_tx.execute("SELECT 1")
    pid = in_tx.info.backend_pid
    wait_for(
        lambda: pids_in(admin, [pid], "state = 'idle in transaction'", limit), what="idle in transaction"
    )
    backends = read_backends(admin)
    plan = dict(older_than=limit, now=backends.now, keep_own_pid=backends.own_pid, database=db)
    assert idle_to_terminate(backends.rows, **plan) == []

    targets = idle_to_terminate(backends.rows, **plan, idle_in_transaction=True)
    result = terminate(admin, targets, dry_run=False)

    assert result.pids("terminated") == [pid]
    wait_for(lambda: not pids_in(admin, [pid]), what="the backend idle in a transaction to exit")


def test_dry_run_lists_and_changes_nothing(admin, open_conn, db):
    limit = timedelta(seconds=1)
    idle = [open_conn(f"dry-{i}") for i in range(2)]
    wait_idle(admin, idle, limit)
    backends = read_backends(admin)
    targets = idle_to_terminate(
        backends.rows, older_than=limit, now=backends.now, keep_own_pid=backends.own_pid, database=db
    )

    result = terminate(admin, targets, dry_run=True)

    pids = [c.info.backend_pid for c in idle]
    assert sorted(result.pids("planned")) == sorted(pids)
    assert not result.changed
    assert pids_in(admin, pids, "state = 'idle'") == set(pids)
    for conn in idle:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_connections_by_state_for_the_diagnostics(admin, open_conn, db, pg_server):
    [open_conn(f"count-{i}") for i in range(2)]
    in_tx = open_conn("count-tx")
    in_tx.execute("BEGIN")
    in_tx.execute("SELECT 1")
    pid = in_tx.info.backend_pid
    wait_for(lambda: pids_in(admin, [pid], "state = 'idle in transaction'"), what="idle in transaction")

    snapshot = connections_by_state(admin)

    mine = {(c.state, c.count) for c in snapshot.by_database_user if c.database == db}
    assert mine == {("idle", 2), ("idle in transaction", 1)}
    assert snapshot.max_connections == 50  # pg_fixtures' server setting
    assert snapshot.superuser_reserved == 3  # PostgreSQL's default
    assert snapshot.client_backends >= 4  # three here and the runbook's own (active)
    assert snapshot.by_state["active"] >= 1
    assert snapshot.available == 50 - 3 - snapshot.reserved - snapshot.client_backends
    assert "connections in use" in snapshot.summary()
    assert pg_server.password not in str(snapshot.to_dict())

"""A real PostgreSQL server for the backup and drill tests, and databases worth backing up.

Import the fixtures into a test module (``from tests.integration.pg_fixtures import *``
is not needed: ``pytest_plugins`` can't be used below the root conftest, so modules do
``from pg_fixtures import pg_server, ...`` with this directory on sys.path, see below).

- ``pg_server`` (session): one ``opsdag.dev.sandbox.postgres.PostgresServer`` in a temporary
  directory on a free port, stopped at the end of the session.
- ``make_db(name)``: a fresh database filled by ``fill_demo`` (several tables: keys, text,
  numbers, time zones, json, bytea, arrays, a partitioned table, an awkward name).
- ``target_for(server, db)``: an ``opsdag.backups.pg.PgTarget`` with the password.
- ``connection_env(conn_id, server, db, extra=...)``: the ``AIRFLOW_CONN_<ID>`` pair.
- ``table_rows(target)``: every table's rows, sorted, for exact comparisons.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.airflow_home import postgres_connection

from opsdag.backups.pg import PgTarget, qualified
from opsdag.backups.stats import list_tables
from opsdag.dev.sandbox.postgres import PostgresServer

DEMO_SQL = """
CREATE TABLE customers (id bigserial PRIMARY KEY, name text NOT NULL, email text UNIQUE,
                        created timestamptz NOT NULL DEFAULT '2026-01-01 00:00+00');
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint REFERENCES customers(id),
                     item text, qty int, price numeric(12, 2), ratio double precision,
                     at timestamptz, tags text[], doc json, blob bytea);
CREATE TABLE events (id int, happened date, payload jsonb) PARTITION BY RANGE (happened);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."Mixed Case" ("a b" int, "c" text);
CREATE TABLE empty_table (id int);
INSERT INTO customers (name, email) SELECT 'customer ' || g, 'c' || g || '@example.org'
  FROM generate_series(1, 300) g;
INSERT INTO orders (customer_id, item, qty, price, ratio, at, tags, doc, blob)
  SELECT 1 + g % 300, 'item-' || (g % 17), g % 9, (g * 1.25)::numeric(12, 2), g / 7.0,
         '2026-01-01 00:00+00'::timestamptz + g * interval '1 minute',
         ARRAY['a' || g % 3, 'b'], json_build_object('g', g), decode(md5(g::text), 'hex')
  FROM generate_series(1, %(orders)s) g;
INSERT INTO events SELECT g, date '2025-06-01' + (g % 400), jsonb_build_object('n', g)
  FROM generate_series(1, 2000) g;
INSERT INTO "Odd Schema"."Mixed Case" SELECT g, 'v' || g FROM generate_series(1, 50) g;
"""


def fill_demo(server: PostgresServer, dbname: str, *, orders: int = 5000) -> None:
    server.psql(DEMO_SQL.replace("%(orders)s", str(orders)), dbname)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """The server lives outside pytest's numbered temp dirs: a concurrent pytest session
    cleaning up "old" numbered dirs must not delete a running server's data directory."""
    base = tmp_path_factory.mktemp("pg")
    home = Path(tempfile.mkdtemp(prefix="opsdag-test-pg-"))
    server = PostgresServer(home / "server", settings={"max_connections": 50})
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.copy2(server.log_file, base / "postgres.log")  # kept with pytest's temp dirs
        server.destroy()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def make_db(pg_server: PostgresServer, request: pytest.FixtureRequest) -> Callable[..., str]:
    """``make_db(name, orders=5000, empty=False)``: a new database (dropped after the test)."""
    created: list[str] = []

    def make(name: str | None = None, *, orders: int = 5000, empty: bool = False) -> str:
        base = name or request.node.name
        dbname = "t_" + "".join(ch if ch.isalnum() else "_" for ch in base.lower())[:40] + f"_{len(created)}"
        pg_server.psql(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE);')
        pg_server.create_database(dbname)
        created.append(dbname)
        if not empty:
            fill_demo(pg_server, dbname, orders=orders)
        return dbname

    yield make
    for dbname in created:
        pg_server.psql(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE);')


def target_for(server: PostgresServer, dbname: str) -> PgTarget:
    return PgTarget(server.host, server.port, server.superuser, dbname, password=server.password)


def connection_env(
    conn_id: str, server: PostgresServer, dbname: str, extra: dict[str, Any] | None = None
) -> tuple[str, str]:
    return f"AIRFLOW_CONN_{conn_id.upper()}", postgres_connection(server, dbname, extra)


def table_rows(target: PgTarget) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows as text, sorted (so that physical order does not matter)."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with target.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        for schema, name in list_tables(conn):
            rows = conn.execute(f"SELECT t::text FROM ONLY {qualified(schema, name)} t").fetchall()
            out[f"{schema}.{name}"] = sorted(rows)
    return out


def database_exists(server: PostgresServer, dbname: str) -> bool:
    return bool(server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{dbname}';").strip())


def files_below(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []

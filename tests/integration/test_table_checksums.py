# ruff: noqa: F811  (pytest fixtures imported from a helper module are redefined as arguments)
"""The per-table proof of a logical backup (copy-sha256-v1) against a real PostgreSQL.

A backup is taken, restored with pg_restore into a fresh database, and the drill's
``verify_restored`` recomputes every table's rows and COPY-text sha256 there. Each way a
restored copy can differ must be caught: a changed value, a missing row, a duplicated row;
a copy with the same data must pass whatever the drill session's own settings are.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pg_fixtures import make_db, pg_server, target_for  # noqa: F401

from opsdag.backups import engine, logical
from opsdag.backups import stats as table_stats
from opsdag.backups.drill_verification import verify_restored
from opsdag.backups.manifest import Manifest
from opsdag.backups.storage import BackupStore

pytestmark = pytest.mark.integration

DB = "sums-db"

# Types whose text depends on session settings (time zone, date and interval style,
# float digits, bytea output, money), plus a row with a tab, a newline and a backslash.
MORE_TYPES_SQL = """
CREATE TABLE kinds (id int PRIMARY KEY, at timestamptz, d date, i interval, f float8, r real,
                    b bytea, m money, j jsonb, n numeric, t text, arr int[]);
INSERT INTO kinds SELECT g, '2026-03-29 01:30+00'::timestamptz + g * interval '17 minutes',
       date '2026-01-01' + g, g * interval '1 day 3 hours', g / 3.0, g / 7.0,
       decode(md5(g::text), 'hex'), g * 1.5, jsonb_build_object('k', g), g / 11.0,
       'tab\tnewline' || chr(10) || 'back\\slash ' || g, ARRAY[g, g + 1]
  FROM generate_series(1, 400) g;
"""


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSDAG_STATE_DIR", str(tmp_path / "state"))


def backup(store: BackupStore, target, options: engine.BackupOptions | None = None) -> Manifest:
    backup_id = engine.backup_id_for(datetime.now(UTC), f"run-{os.getpid()}")
    engine.take_backup(target, store, DB, backup_id, options or engine.BackupOptions())
    return engine.publish_manifest(store, DB, backup_id)


@pytest.fixture
def restored(pg_server, make_db, tmp_path):
    """``(source db, restored db, manifest)`` of a demo database with the extra types table."""
    source = make_db(orders=3000)
    pg_server.psql(MORE_TYPES_SQL, source)
    store = BackupStore(tmp_path / "backups")
    manifest = backup(store, target_for(pg_server, source))
    name = f"restored_{os.getpid()}_{tmp_path.name[-12:]}".lower()
    pg_server.psql(f'DROP DATABASE IF EXISTS "{name}"; CREATE DATABASE "{name}" TEMPLATE template0;')
    dump_dir = store.local(store.backup_dir(DB, manifest.id) / "data")
    logical.restore(target_for(pg_server, name), dump_dir, jobs=2, scratch=tmp_path / "restore")
    yield source, name, manifest
    pg_server.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE);')


def verify(pg_server, dbname: str, manifest: Manifest) -> dict:
    with target_for(pg_server, dbname).connect() as conn:
        return verify_restored(conn, manifest, [])


def problems(result: dict) -> dict[str, str]:
    return {t["table"]: t["problem"] for t in result["tables"] if not t["ok"]}


def test_an_identical_copy_verifies_whatever_the_drill_sessions_settings(pg_server, restored):
    _source, name, manifest = restored
    assert {t.method for t in manifest.tables} == {"copy-sha256-v1"}
    # The restored database's own defaults differ from the dump's in every setting that
    # shapes a value's text: the drill pins them as pg_dump had them.
    pg_server.psql(
        f"ALTER DATABASE \"{name}\" SET TimeZone = 'Asia/Kathmandu'; "
        f"ALTER DATABASE \"{name}\" SET DateStyle = 'SQL, DMY'; "
        f"ALTER DATABASE \"{name}\" SET IntervalStyle = 'iso_8601'; "
        f'ALTER DATABASE "{name}" SET extra_float_digits = -3; '
        f"ALTER DATABASE \"{name}\" SET bytea_output = 'escape';"
    )
    result = verify(pg_server, name, manifest)
    assert result["ok"], problems(result)
    assert {t["table"] for t in result["tables"]} >= {
        "public.kinds",
        "public.orders",
        "Odd Schema.Mixed Case",
    }


def rewrite_in_scan_order(pg_server, dbname: str, table: str, select: str) -> None:
    """Reload ``table`` from a copy of itself in its own scan order, through ``select``."""
    pg_server.psql(
        f"SET synchronize_seqscans = off; BEGIN; CREATE TEMP TABLE c AS SELECT * FROM {table}; "
        f"TRUNCATE {table}; INSERT INTO {table} {select}; COMMIT;",
        dbname,
    )


def test_a_changed_value_is_detected(pg_server, restored):
    _source, name, manifest = restored
    # Reloading unchanged keeps the rows in the same order: still identical.
    rewrite_in_scan_order(pg_server, name, "kinds", "SELECT * FROM c")
    assert verify(pg_server, name, manifest)["ok"]
    # The same reload with one value changed (same length, same row count): caught.
    rewrite_in_scan_order(
        pg_server,
        name,
        "kinds",
        "SELECT id, at, d, i, f, r, b, m, j, n, "
        "CASE WHEN id = 200 THEN replace(t, '200', '201') ELSE t END, arr FROM c",
    )
    result = verify(pg_server, name, manifest)
    assert problems(result) == {"public.kinds": "checksum differs"}


def test_a_missing_row_is_detected(pg_server, restored):
    _source, name, manifest = restored
    pg_server.psql("DELETE FROM orders WHERE id = 1234;", name)
    result = verify(pg_server, name, manifest)
    assert problems(result) == {"public.orders": "2999 rows, expected 3000; checksum differs"}


def test_a_duplicated_row_is_detected(pg_server, restored):
    _source, name, manifest = restored
    pg_server.psql(
        'INSERT INTO "Odd Schema"."Mixed Case" SELECT * FROM "Odd Schema"."Mixed Case" LIMIT 1;', name
    )
    result = verify(pg_server, name, manifest)
    assert problems(result) == {"Odd Schema.Mixed Case": "51 rows, expected 50; checksum differs"}


def test_rows_come_back_in_the_order_they_were_dumped(pg_server, make_db, tmp_path):
    """The checksum is over the COPY text in scan order: it holds because a restored heap
    returns rows in load order. The source's scan order here is not its key order (rows
    moved by updates); reordering the restored copy by key makes the same data fail."""
    source = make_db(orders=2000)
    pg_server.psql("UPDATE orders SET qty = qty + 1 WHERE id % 3 = 0; VACUUM orders;", source)
    first = pg_server.psql("SET synchronize_seqscans = off; SELECT id FROM orders LIMIT 3;", source)
    assert first.split() != ["1", "2", "3"], "the source's scan order should differ from its key order"
    store = BackupStore(tmp_path / "backups")
    manifest = backup(store, target_for(pg_server, source))
    name = f"ordered_{os.getpid()}"
    pg_server.psql(f'DROP DATABASE IF EXISTS "{name}"; CREATE DATABASE "{name}" TEMPLATE template0;')
    try:
        dump_dir = store.local(store.backup_dir(DB, manifest.id) / "data")
        logical.restore(target_for(pg_server, name), dump_dir, jobs=2, scratch=tmp_path / "restore")
        assert verify(pg_server, name, manifest)["ok"]
        pg_server.psql("CLUSTER orders USING orders_pkey;", name)  # same rows, key order
        assert problems(verify(pg_server, name, manifest)) == {"public.orders": "checksum differs"}
    finally:
        pg_server.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE);')


def test_manifests_with_the_older_methods_still_verify(pg_server, restored):
    """Backups taken before copy-sha256-v1 name record-hash-v1 / text-hash-v1 per table."""
    source, name, manifest = restored
    with target_for(pg_server, source).connect() as conn:
        table_stats.pin_session(conn)
        old = table_stats.capture(conn, checksum=True)
    assert {t.method for t in old} == {"record-hash-v1", "text-hash-v1"}
    data = manifest.model_dump(mode="json", by_alias=True)
    data.pop("table_checksum_settings")
    data["tables"] = [t.to_dict() for t in old]
    older = Manifest.model_validate(data)
    assert verify(pg_server, name, older)["ok"]
    pg_server.psql("UPDATE kinds SET t = 'changed' WHERE id = 3;", name)
    assert problems(verify(pg_server, name, older)) == {"public.kinds": "checksum differs"}


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_other_compressions_carry_the_same_proof(pg_server, make_db, tmp_path, compression):
    source = make_db(orders=2000)
    store = BackupStore(tmp_path / "backups")
    manifest = backup(
        store, target_for(pg_server, source), engine.BackupOptions(compression=compression, level=3)
    )
    gzip_store = BackupStore(tmp_path / "gzip")
    reference = backup(gzip_store, target_for(pg_server, source))
    assert [(t.name, t.rows, t.checksum) for t in manifest.tables] == [
        (t.name, t.rows, t.checksum) for t in reference.tables
    ]
    assert engine.verify(store, DB, manifest.id)["status"] == "verified"
    name = f"other_{compression}_{os.getpid()}"
    pg_server.psql(f'DROP DATABASE IF EXISTS "{name}"; CREATE DATABASE "{name}" TEMPLATE template0;')
    try:
        dump_dir = store.local(store.backup_dir(DB, manifest.id) / "data")
        logical.restore(target_for(pg_server, name), dump_dir, jobs=2, scratch=tmp_path / "restore")
        assert verify(pg_server, name, manifest)["ok"]
    finally:
        pg_server.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE);')

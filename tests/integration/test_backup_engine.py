# ruff: noqa: F811  (pytest fixtures imported from a helper module are redefined as arguments)
"""Backups against a real PostgreSQL: dump, manifest, verify, restore, corruption, interruption.

The engine (``opsdag.backups``) runs here without Airflow's scheduler; the DAG runs are
in tests/e2e. Each test takes a fresh database from ``make_db``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pg_fixtures import database_exists, make_db, pg_server, table_rows, target_for  # noqa: F401

from opsdag.backups import engine, logical
from opsdag.backups.drill_engine import check_files
from opsdag.backups.pg import ToolError
from opsdag.backups.retention import RetentionPolicy
from opsdag.backups.stats import capture_like, compare, pin_session
from opsdag.backups.storage import BackupStore

pytestmark = pytest.mark.integration

DB = "demo-db"


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSDAG_STATE_DIR", str(tmp_path / "state"))


def backup(store: BackupStore, target, options=None, run_id: str = "run", **kwargs) -> str:
    backup_id = engine.backup_id_for(datetime.now(UTC), run_id)
    engine.take_backup(target, store, DB, backup_id, options or engine.BackupOptions(), **kwargs)
    engine.publish_manifest(store, DB, backup_id)
    return backup_id


def restore_into(pg_server, store: BackupStore, backup_id: str, tmp_path: Path) -> str:
    restored = f"restored_{backup_id[-6:]}_{os.getpid()}"
    pg_server.psql(f'DROP DATABASE IF EXISTS "{restored}"; CREATE DATABASE "{restored}" TEMPLATE template0;')
    dump_dir = store.local(store.backup_dir(DB, backup_id) / "data")
    logical.restore(target_for(pg_server, restored), dump_dir, jobs=2, scratch=tmp_path / "restore")
    return restored


def test_backup_and_verify_a_database_with_several_tables(pg_server, make_db, tmp_path):
    dbname = make_db()
    store = BackupStore(tmp_path / "backups")
    backup_id = backup(
        store, target_for(pg_server, dbname), run={"dag_id": "backup__demo-db", "run_id": "r1"}
    )

    manifest_path = tmp_path / "backups" / DB / backup_id / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["id"] == backup_id and manifest["database"] == DB and manifest["dbname"] == dbname
    assert manifest["method"] == "logical" and manifest["complete"] is True
    assert manifest["compression"] == {"algorithm": "gzip", "level": 6, "applied_by": "pg_dump"}
    assert manifest["server_version_num"] >= 150000
    assert manifest["started"] <= manifest["consistent_at"] <= manifest["finished"]
    assert manifest["run"] == {"dag_id": "backup__demo-db", "run_id": "r1"}
    paths = {f["path"] for f in manifest["files"]}
    assert "data/toc.dat" in paths and all(len(f["sha256"]) == 64 for f in manifest["files"])
    assert manifest["bytes"] == sum(f["bytes"] for f in manifest["files"])
    tables = {f"{t['schema']}.{t['name']}": t for t in manifest["tables"]}
    assert set(tables) == {
        "public.customers",
        "public.orders",
        "public.events_2025",
        "public.events_2026",
        "Odd Schema.Mixed Case",
        "public.empty_table",
    }
    assert tables["public.orders"]["rows"] == 5000 and tables["public.customers"]["rows"] == 300
    assert tables["public.events_2025"]["rows"] + tables["public.events_2026"]["rows"] == 2000
    # Every table's COPY text hashed as pg_dump wrote it (copy_checksum.py), json columns too.
    assert {t["method"] for t in tables.values()} == {"copy-sha256-v1"}
    assert tables["public.orders"]["columns"][:3] == ["id", "customer_id", "item"]
    assert tables["public.empty_table"] == {
        "schema": "public",
        "name": "empty_table",
        "rows": 0,
        "checksum": hashlib.sha256(b"").hexdigest(),
        "method": "copy-sha256-v1",
        "columns": ["id"],
    }
    assert manifest["table_checksum_settings"]["TimeZone"] == "UTC"
    assert not (tmp_path / "backups" / DB / backup_id / "capture.json").exists()

    result = engine.verify(store, DB, backup_id)
    assert result["status"] == "verified", result["problems"]
    assert "data of all 6 tables" in result["contents"]
    [listed] = store.list_backups(DB)
    assert (listed.id, listed.state) == (backup_id, "verified")


def test_restore_into_a_fresh_database_gives_every_row_back(pg_server, make_db, tmp_path):
    dbname = make_db()
    store = BackupStore(tmp_path / "backups")
    backup_id = backup(store, target_for(pg_server, dbname))
    restored = restore_into(pg_server, store, backup_id, tmp_path)
    try:
        source_rows = table_rows(target_for(pg_server, dbname))
        assert table_rows(target_for(pg_server, restored)) == source_rows
        assert sum(len(rows) for rows in source_rows.values()) == 300 + 5000 + 2000 + 50
        manifest = store.read_manifest(DB, backup_id)
        with target_for(pg_server, restored).connect() as conn:
            pin_session(conn)
            comparison = compare(manifest.table_stats(), capture_like(conn, manifest.table_stats()))
        assert all(c.ok for c in comparison), [c for c in comparison if not c.ok]
    finally:
        pg_server.psql(f'DROP DATABASE "{restored}" WITH (FORCE);')


def test_stats_and_dump_share_one_snapshot_while_writes_go_on(pg_server, make_db, tmp_path):
    """Rows inserted during the backup are in neither the dump nor the manifest's counts."""
    dbname = make_db(orders=60000)
    store = BackupStore(tmp_path / "backups")
    stop = threading.Event()
    inserted = []

    def writer() -> None:
        with target_for(pg_server, dbname).connect() as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO orders (customer_id, item, qty) VALUES (1, 'during backup', 1)")
                conn.execute("UPDATE customers SET name = name || '+' WHERE id = 1 + (random() * 299)::int")
                inserted.append(1)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        backup_id = backup(store, target_for(pg_server, dbname))
    finally:
        stop.set()
        thread.join()
    restored = restore_into(pg_server, store, backup_id, tmp_path)
    try:
        manifest = store.read_manifest(DB, backup_id)
        with target_for(pg_server, restored).connect() as conn:
            pin_session(conn)
            comparison = compare(manifest.table_stats(), capture_like(conn, manifest.table_stats()))
        assert all(c.ok for c in comparison), [c for c in comparison if not c.ok]
        assert inserted, "the writer ran during the backup"
    finally:
        pg_server.psql(f'DROP DATABASE "{restored}" WITH (FORCE);')


def test_a_flipped_byte_in_a_stored_file_fails_verification(pg_server, make_db, tmp_path):
    store = BackupStore(tmp_path / "backups")
    backup_id = backup(store, target_for(pg_server, make_db()))
    manifest = store.read_manifest(DB, backup_id)
    biggest = max(manifest.files, key=lambda f: f.bytes)
    path = tmp_path / "backups" / DB / backup_id / biggest.path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    result = engine.verify(store, DB, backup_id)
    assert result["status"] == "bad"
    assert result["problems"] == [f"{biggest.path}: sha256 differs from the manifest"]
    stored = json.loads((tmp_path / "backups" / DB / backup_id / "verification.json").read_text())
    assert stored["status"] == "bad"
    assert store.list_backups(DB)[0].state == "bad" and store.newest_verified(DB) is None


def test_a_damaged_table_of_contents_fails_verification_even_with_a_matching_manifest(
    pg_server,
    make_db,
    tmp_path,
):
    store = BackupStore(tmp_path / "backups")
    backup_id = backup(store, target_for(pg_server, make_db()))
    toc = tmp_path / "backups" / DB / backup_id / "data" / "toc.dat"
    toc.write_bytes(toc.read_bytes()[:200])
    manifest_path = tmp_path / "backups" / DB / backup_id / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for entry in manifest["files"]:  # as if the damage happened before the manifest was written
        if entry["path"] == "data/toc.dat":
            entry["bytes"], entry["sha256"] = store.hash_file(
                store.backup_dir(DB, backup_id) / "data/toc.dat"
            )
    manifest_path.write_text(json.dumps(manifest))
    result = engine.verify(store, DB, backup_id)
    assert result["status"] == "bad"
    assert "pg_restore --list failed" in result["problems"][0]


def test_an_interrupted_backup_leaves_no_visible_backup(pg_server, make_db, tmp_path):
    dbname = make_db(orders=100000)
    store = BackupStore(tmp_path / "backups")

    def kill_it(proc) -> None:
        os.killpg(proc.pid, signal.SIGKILL)

    backup_id = engine.backup_id_for(datetime.now(UTC), "interrupted")
    with pytest.raises(ToolError, match="pg_dump failed"):
        engine.take_backup(
            target_for(pg_server, dbname), store, DB, backup_id, engine.BackupOptions(), on_start=kill_it
        )
    assert store.list_backups(DB) == []
    assert not (tmp_path / "backups" / DB / f".partial-{backup_id}").exists()

    # Dumped but never published (the worker died before the manifest step): not a backup.
    engine.take_backup(target_for(pg_server, dbname), store, DB, backup_id, engine.BackupOptions())
    [partial] = store.list_backups(DB)
    assert partial.state == "partial" and store.read_manifest(DB, backup_id) is None
    assert store.newest_verified(DB) is None
    # The retried run publishes it once; a second publish and a second dump change nothing.
    first = engine.publish_manifest(store, DB, backup_id)
    assert engine.publish_manifest(store, DB, backup_id) == first
    again = engine.take_backup(target_for(pg_server, dbname), store, DB, backup_id, engine.BackupOptions())
    assert again["skipped"] is True
    assert [b.id for b in store.list_backups(DB)] == [backup_id]
    assert sorted(p.name for p in (tmp_path / "backups" / DB).iterdir()) == [backup_id]


def test_the_password_never_reaches_a_command_line_or_the_environment(pg_server, make_db, tmp_path, caplog):
    dbname = make_db(orders=50000)
    store = BackupStore(tmp_path / "backups")
    seen: dict[str, bytes] = {}

    def inspect(proc) -> None:
        seen["cmdline"] = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        seen["environ"] = Path(f"/proc/{proc.pid}/environ").read_bytes()

    caplog.set_level("DEBUG")
    backup(store, target_for(pg_server, dbname), on_start=inspect)
    password = pg_server.password.encode()
    assert b"pg_dump" in seen["cmdline"] and b"--snapshot=" in seen["cmdline"]
    assert password not in seen["cmdline"] and password not in seen["environ"]
    assert b"PGPASSFILE=" in seen["environ"]
    assert pg_server.password not in caplog.text
    assert pg_server.password not in "".join(p.read_text() for p in (tmp_path / "backups").rglob("*.json"))


def test_zstd_compression_by_opsdag_round_trips(pg_server, make_db, tmp_path):
    dbname = make_db()
    store = BackupStore(tmp_path / "backups")
    backup_id = backup(
        store, target_for(pg_server, dbname), engine.BackupOptions(compression="zstd", level=3)
    )
    manifest = store.read_manifest(DB, backup_id)
    assert manifest.compression.model_dump() == {"algorithm": "zstd", "level": 3, "applied_by": "opsdag"}
    assert any(f.path.endswith(".dat.zst") for f in manifest.files)
    assert engine.verify(store, DB, backup_id)["status"] == "verified"
    restored = restore_into(pg_server, store, backup_id, tmp_path)
    try:
        assert table_rows(target_for(pg_server, restored)) == table_rows(target_for(pg_server, dbname))
    finally:
        pg_server.psql(f'DROP DATABASE "{restored}" WITH (FORCE);')


def test_an_object_store_holds_the_same_backup(pg_server, make_db, tmp_path):
    """The remote code path (scratch dir, upload, download) on fsspec's in-memory store."""
    from airflow.sdk.io import attach
    from fsspec.implementations.memory import MemoryFileSystem

    attach("memory", fs=MemoryFileSystem())
    store = BackupStore(f"memory://backups-{os.getpid()}/root")
    assert not store.is_local
    backup_id = backup(store, target_for(pg_server, make_db()))
    assert [(b.id, b.state) for b in store.list_backups(DB)] == [(backup_id, "unverified")]
    assert engine.verify(store, DB, backup_id)["status"] == "verified"
    manifest = store.read_manifest(DB, backup_id)
    assert check_files(store, manifest, store.backup_dir(DB, backup_id)) == []
    engine.apply_retention(store, DB, RetentionPolicy(1, 0, 0, 0))
    store.delete(DB, backup_id)
    assert store.list_backups(DB) == []


def test_retention_prunes_real_backups_and_dry_run_changes_nothing(pg_server, make_db, tmp_path):
    dbname = make_db(orders=100)
    store = BackupStore(tmp_path / "backups")
    ids = []
    for n in range(3):
        backup_id = f"2026010{n + 1}T020000Z-{n:06d}"
        engine.take_backup(target_for(pg_server, dbname), store, DB, backup_id, engine.BackupOptions())
        engine.publish_manifest(store, DB, backup_id)
        engine.verify(store, DB, backup_id)
        ids.append(backup_id)
    policy = RetentionPolicy(keep_last=1, daily=0, weekly=0, monthly=0)
    dry = engine.apply_retention(store, DB, policy, dry_run=True)
    assert dry["deleted"] == [] and sorted(dry["delete"]) == ids[:2]
    assert len(store.list_backups(DB)) == 3
    done = engine.apply_retention(store, DB, policy)
    assert sorted(done["deleted"]) == ids[:2]
    assert [b.id for b in store.list_backups(DB)] == [ids[2]]
    assert sorted(p.name for p in (tmp_path / "backups" / DB).iterdir()) == [ids[2]]


def test_preflight_reports_the_server_and_refuses_an_unreachable_one(pg_server, make_db, tmp_path):
    store = BackupStore(tmp_path / "backups")
    target = target_for(pg_server, make_db(orders=10))
    result = engine.preflight(target, store, DB, engine.BackupOptions())
    assert result["server_version"].startswith("15") and result["free_bytes"] > result["expected_bytes"]
    from dataclasses import replace

    with pytest.raises(engine.BackupError, match="not reachable"):
        engine.preflight(replace(target, port=1), store, DB, engine.BackupOptions())
    assert database_exists(pg_server, target.dbname)


def test_a_physical_backup_is_verified_and_boots_with_the_same_rows(pg_server, make_db, tmp_path):
    from opsdag.backups import drill_verification, physical

    dbname = make_db(orders=2000)
    store = BackupStore(tmp_path / "backups")
    options = engine.BackupOptions(method="physical", compression="zstd", level=3)
    backup_id = backup(store, target_for(pg_server, dbname), options)
    manifest = store.read_manifest(DB, backup_id)
    assert manifest.method == "physical"
    assert manifest.compression.model_dump() == {
        "algorithm": "zstd",
        "level": 3,
        "applied_by": "pg_basebackup",
        "where": "server",  # by the server's walsender with 2 worker threads
        "workers": 2,
    }
    assert "--compress=server-zstd:level=3,workers=2" in manifest.tool["argv"]
    # PostgreSQL 15 compresses the streamed WAL tar with gzip only: with zstd it stays plain.
    assert {"data/base.tar.zst", "data/pg_wal.tar", "data/backup_manifest"} == {
        f.path for f in manifest.files
    }
    assert {t.name: t.rows for t in manifest.tables}["orders"] == 2000
    result = engine.verify(store, DB, backup_id)
    assert result["status"] == "verified", result["problems"]
    assert result["contents"].startswith("pg_verifybackup: backup successfully verified")

    server = physical.start_restored(
        store.local(store.backup_dir(DB, backup_id) / "data"), tmp_path / "r", 15
    )
    try:
        copy = server.target(dbname, pg_server.superuser)
        assert table_rows(copy) == table_rows(target_for(pg_server, dbname))
        with copy.connect() as conn:
            verdict = drill_verification.verify_restored(
                conn, manifest, [{"name": "n", "sql": "select 1", "expect": 1}]
            )
        assert verdict["ok"], verdict
    finally:
        server.stop()
    assert not server.running()

    # A damaged WAL tar, with a manifest that matches it: pg_verifybackup still catches it.
    wal = tmp_path / "backups" / DB / backup_id / "data" / "pg_wal.tar"
    wal.write_bytes(wal.read_bytes()[: wal.stat().st_size // 2])
    manifest_path = tmp_path / "backups" / DB / backup_id / "manifest.json"
    data = json.loads(manifest_path.read_text())
    for entry in data["files"]:
        if entry["path"] == "data/pg_wal.tar":
            entry["bytes"], entry["sha256"] = store.hash_file(store.backup_dir(DB, backup_id) / entry["path"])
    manifest_path.write_text(json.dumps(data))
    assert engine.verify(store, DB, backup_id)["status"] == "bad"

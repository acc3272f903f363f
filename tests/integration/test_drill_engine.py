# ruff: noqa: F811  (pytest fixtures imported from a helper module are redefined as arguments)
"""Drill steps against a real PostgreSQL, without Airflow: retries and teardown are idempotent."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pg_fixtures import database_exists, make_db, pg_server, target_for  # noqa: F401

from opsdag.backups import drill_engine as drill
from opsdag.backups import drill_verification, engine
from opsdag.backups.drill_pick import pick_backup
from opsdag.backups.storage import BackupStore

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSDAG_STATE_DIR", str(tmp_path / "state"))


def verified_backup(pg_server, dbname: str, store: BackupStore) -> str:
    backup_id = engine.backup_id_for(datetime.now(UTC), dbname)
    engine.take_backup(target_for(pg_server, dbname), store, "db", backup_id, engine.BackupOptions())
    engine.publish_manifest(store, "db", backup_id)
    assert engine.verify(store, "db", backup_id)["status"] == "verified"
    return backup_id


def test_a_retried_restore_and_a_retried_teardown_converge(pg_server, make_db, tmp_path):
    store = BackupStore(tmp_path / "backups")
    backup_id = verified_backup(pg_server, make_db(orders=500), store)
    picked = pick_backup(store, "db")
    assert picked.backup.id == backup_id and pick_backup(store, "db", backup_id).backup.id == backup_id
    manifest = store.read_manifest("db", backup_id)
    names = drill.drill_names("drill__db", "manual__retry", "db")
    server = target_for(pg_server, "postgres")

    drill.provision_database(server, names)
    drill.provision_database(server, names)  # a retried provision replaces its own database
    for _ in range(2):  # the second restore finds a full database and starts afresh
        drill.restore(store, "db", manifest, names, target=server, jobs=2)
    with server.with_db(names.scratch_db).connect() as conn:
        assert drill_verification.verify_restored(conn, manifest, [])["ok"]

    first = drill.teardown(server, names)
    assert first["clean"] and first["actions"][0] == f"dropped database {names.scratch_db}"
    again = drill.teardown(server, names)
    assert again == {"actions": ["nothing to remove"], "left_behind": [], "clean": True}
    assert not database_exists(pg_server, names.scratch_db) and not names.workdir.exists()


def test_teardown_never_drops_a_database_it_did_not_create(pg_server, make_db, tmp_path):
    names = drill.drill_names("drill__db", "manual__foreign", "db")
    pg_server.psql(f'CREATE DATABASE "{names.scratch_db}";')
    server = target_for(pg_server, "postgres")
    try:
        with pytest.raises(drill.DrillRefused, match="not this drill's"):
            drill.provision_database(server, names)
        result = drill.teardown(server, names)
        assert result["clean"] is False and "without this drill's marker" in result["left_behind"][0]
        assert database_exists(pg_server, names.scratch_db)
    finally:
        pg_server.psql(f'DROP DATABASE "{names.scratch_db}";')


def test_pick_refuses_what_is_not_verified(pg_server, make_db, tmp_path):
    store = BackupStore(tmp_path / "backups")
    with pytest.raises(drill.DrillError, match="no verified backup"):
        pick_backup(store, "db")
    backup_id = verified_backup(pg_server, make_db(orders=10), store)
    (tmp_path / "backups" / "db" / backup_id / "verification.json").write_text('{"status": "bad"}')
    with pytest.raises(drill.DrillError, match="is bad, not verified"):
        pick_backup(store, "db", backup_id)
    with pytest.raises(drill.DrillError, match="does not exist"):
        pick_backup(store, "db", "20200101T000000Z-000000")

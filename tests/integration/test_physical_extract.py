# ruff: noqa: F811  (pytest fixtures imported from a helper module are redefined as arguments)
"""Physical backups: each compression extracts back into a data directory; a damaged tar fails loudly."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pg_fixtures import make_db, pg_server, target_for  # noqa: F401

from opsdag.backups import engine, physical
from opsdag.backups.pg import ToolError
from opsdag.backups.storage import BackupStore

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSDAG_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture(scope="module")
def backups(pg_server, tmp_path_factory):
    """One small database backed up physically with each compression."""
    dbname = f"phys_{os.getpid()}"
    pg_server.psql(f'DROP DATABASE IF EXISTS "{dbname}"; CREATE DATABASE "{dbname}";')
    pg_server.psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g;", dbname)
    root = tmp_path_factory.mktemp("physical")
    with pytest.MonkeyPatch.context() as patch:  # put back after the module: later ones share the process
        patch.setenv("OPSDAG_STATE_DIR", str(root / "state"))
        store = BackupStore(root / "backups")
        made = {}
        for compression in ("zstd", "gzip", "none"):
            backup_id = engine.backup_id_for(datetime.now(UTC), f"phys-{compression}")
            options = engine.BackupOptions(
                method="physical", compression=compression, level=3, table_checksums=False
            )
            engine.take_backup(target_for(pg_server, dbname), store, "db", backup_id, options)
            engine.publish_manifest(store, "db", backup_id)
            made[compression] = (store, backup_id)
        yield made
        pg_server.psql(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE);')


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_every_compression_extracts_and_passes_pg_verifybackup(backups, compression):
    store, backup_id = backups[compression]
    manifest = store.read_manifest("db", backup_id)
    base = {"zstd": "data/base.tar.zst", "gzip": "data/base.tar.gz", "none": "data/base.tar"}[compression]
    assert base in {f.path for f in manifest.files}
    result = engine.verify(store, "db", backup_id)
    assert result["status"] == "verified", result["problems"]


def test_a_truncated_zstd_tar_fails_extraction(backups, tmp_path):
    store, backup_id = backups["zstd"]
    source = store.local(store.backup_dir("db", backup_id) / "data")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for file in source.iterdir():
        data = file.read_bytes()
        (damaged / file.name).write_bytes(data[: len(data) // 2] if file.name == "base.tar.zst" else data)
    with pytest.raises(ToolError, match=r"tar \(base\) failed"):
        physical.extract(damaged, tmp_path / "out")

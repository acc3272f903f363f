# ruff: noqa: F811  (pytest fixtures imported from a helper module are redefined as arguments)
"""A storage that fills up: a real 2 MiB tmpfs mounted for the test (root only; skipped otherwise).

What the issue asks of a full disk: no visible partial backup, the WAL segment stays with
PostgreSQL (the push exits non-zero and leaves nothing), the run fails naming the storage,
and the next attempt succeeds once there is room. The backup goes through the engine
(``take_backup`` / ``publish_manifest``), the push through the real command.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pg_fixtures import make_db, pg_server, target_for  # noqa: F401
from support.small_disk import mounted_tmpfs

from opsdag.backups import engine
from opsdag.backups.storage import BackupStore
from opsdag.backups.wal_names import segment_of

pytestmark = pytest.mark.integration

DB = "full-db"
PLUGINS = Path(__file__).resolve().parents[2] / "plugins"


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSDAG_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs at ``<tmp>/disk``, unmounted afterwards."""
    with mounted_tmpfs(tmp_path / "disk", "2m") as disk:
        yield disk


def fill(disk: Path, leave: int) -> Path:
    """Take all but ``leave`` bytes of the disk's free space with a filler file."""
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        fh.truncate(0)
        chunk = b"\0" * 65536
        todo = shutil.disk_usage(disk).free - leave
        while todo > 0:
            fh.write(chunk[: min(todo, len(chunk))])
            todo -= len(chunk)
    return filler


def everything_below(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_a_backup_that_fills_the_storage_fails_naming_it_and_leaves_nothing(pg_server, make_db, small_disk):
    dbname = make_db(orders=1000)
    store = BackupStore(small_disk / "backups")
    backup_id = engine.backup_id_for(datetime.now(UTC), "full-run")
    filler = fill(small_disk, leave=64 * 1024)

    with pytest.raises(engine.StorageRefused) as failed:
        engine.take_backup(target_for(pg_server, dbname), store, DB, backup_id, engine.BackupOptions())
    message = str(failed.value)
    assert f"the storage {store.url} refused the write (No space left on device)" in message, message
    assert "nothing of it was kept" in message
    assert store.list_backups(DB) == [] and store.newest_verified(DB) is None
    assert everything_below(small_disk / "backups") == [DB]  # no .partial-*, no temp file

    filler.unlink()  # room again: the same run's retry goes through
    engine.take_backup(target_for(pg_server, dbname), store, DB, backup_id, engine.BackupOptions())
    engine.publish_manifest(store, DB, backup_id)
    assert engine.verify(store, DB, backup_id)["status"] == "verified"


def test_a_manifest_that_does_not_fit_leaves_the_backup_invisible_until_a_retry(
    pg_server, make_db, small_disk
):
    dbname = make_db(orders=200)
    store = BackupStore(small_disk / "backups")
    backup_id = engine.backup_id_for(datetime.now(UTC), "full-manifest")
    engine.take_backup(target_for(pg_server, dbname), store, DB, backup_id, engine.BackupOptions())
    filler = fill(small_disk, leave=0)

    with pytest.raises(engine.StorageRefused, match="stays invisible"):
        engine.publish_manifest(store, DB, backup_id)
    assert [(b.id, b.state) for b in store.list_backups(DB)] == [(backup_id, "partial")]
    assert store.read_manifest(DB, backup_id) is None
    assert not [p for p in everything_below(small_disk / "backups") if p.endswith(".tmp")]

    filler.unlink()
    engine.publish_manifest(store, DB, backup_id)
    assert [(b.id, b.state) for b in store.list_backups(DB)] == [(backup_id, "unverified")]


def wal_push(storage: Path, source: Path, name: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-s", "-m", "opsdag", "wal", "push", "--database", DB, "--storage", str(storage)]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PLUGINS)}
    return subprocess.run([*argv, str(source), name], env=env, capture_output=True, text=True, timeout=60)


def test_a_wal_push_into_a_full_archive_exits_non_zero_leaves_nothing_and_a_retry_succeeds(
    small_disk, tmp_path
):
    segment_size = 1 << 20
    name = segment_of(5 * segment_size, 1, segment_size).name
    source = tmp_path / "segment"
    source.write_bytes(os.urandom(segment_size))
    filler = fill(small_disk, leave=segment_size // 2)
    archive = small_disk / DB / "wal"

    failed = wal_push(small_disk, source, name)
    assert failed.returncode == 1, failed.stdout + failed.stderr  # PostgreSQL keeps the segment
    assert f"FAILED {name}" in failed.stderr and "No space left on device" in failed.stderr
    assert everything_below(archive) == []  # no segment, no checksum, no temp file

    filler.unlink()
    retried = wal_push(small_disk, source, name)
    assert retried.returncode == 0, retried.stderr
    assert everything_below(archive) == [name, f"{name}.sha256"]
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert (archive / name).read_bytes() == source.read_bytes()
    assert (archive / f"{name}.sha256").read_text() == f"{digest}  {name}\n"

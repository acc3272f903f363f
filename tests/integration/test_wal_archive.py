"""WAL archiving against a real PostgreSQL 15 whose ``archive_command`` is ``opsdag wal push``.

The server is this module's own (archiving needs ``archive_mode = on`` from its start), run
as the ``postgres`` OS user when the tests run as root, with the sandbox's
``archive_command`` (``opsdag.dev.sandbox.wal_archiving``): the interpreter and the
directory it writes must be usable by that user, which is part of what is tested.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.waiting import wait_for
from wal_fixtures import Archiving, archiving_server, base_backup

from opsdag.backups.pg_server import server_user
from opsdag.backups.wal_archive import backup_wal_range, check_archive, list_archive
from opsdag.backups.wal_push import archive_dir, read_checksum, sha256_file
from opsdag.backups.wal_retention import apply_wal_retention

pytestmark = pytest.mark.integration

DB = "wal-db"
PLUGINS = Path(__file__).resolve().parents[2] / "plugins"


@pytest.fixture(scope="module")
def archiving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archiving]:
    with archiving_server(tmp_path_factory.mktemp("wal"), DB) as server:
        yield server


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary directory the server's OS user can enter (pytest's own are 0700, root's)."""
    path = Path(tempfile.mkdtemp(prefix="opsdag-test-wal-push-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OPSDAG_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def test_segments_arrive_after_pg_switch_wal_with_their_sha256(archiving):
    names = [archiving.switch() for _ in range(3)]
    for name in names:
        path = archiving.wait_archived(name)
        assert read_checksum(archiving.directory, name) == sha256_file(path)[1]
        assert path.stat().st_size == 16 * 1024 * 1024
        if server_user() is not None:  # written by the archiver, as the server's OS user
            assert path.stat().st_uid == server_user().pw_uid
    assert not [p.name for p in archiving.directory.iterdir() if p.name.startswith(".")]  # no temp files
    assert archiving.archiver()["failed"] == 0


def test_the_same_segment_pushed_again_is_a_success(archiving, shared_tmp):
    name = archiving.switch()
    stored = archiving.wait_archived(name)
    copy = shared_tmp / "again"
    shutil.copy2(stored, copy)
    os.chmod(copy, 0o644)
    proc = archiving.push(copy, name)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"opsdag wal push: already archived {name}")


def test_a_different_segment_under_the_same_name_is_refused_and_postgresql_retries(archiving):
    archiving.sql(
        "CREATE TABLE IF NOT EXISTS filler (x int); INSERT INTO filler SELECT generate_series(1, 10);"
    )
    upcoming = archiving.sql("SELECT pg_walfile_name(pg_current_wal_lsn());")
    impostor = archiving.directory / upcoming
    impostor.write_bytes(os.urandom(16 * 1024 * 1024))  # another cluster's segment, say
    impostor_digest = sha256_file(impostor)[1]
    (archiving.directory / f"{upcoming}.sha256").write_text(f"{impostor_digest}  {upcoming}\n")
    before = archiving.archiver()["failed"]
    try:
        assert archiving.switch() == upcoming
        wait_for(
            lambda: archiving.archiver()["failed"] >= before + 2,
            30,
            what="pg_stat_archiver.failed_count to grow (PostgreSQL retrying)",
        )
        stats = archiving.archiver()
        assert stats["last_failed"] == upcoming
        assert sha256_file(impostor)[1] == impostor_digest  # never overwritten
        ready = archiving.server.data_dir / "pg_wal" / "archive_status" / f"{upcoming}.ready"
        assert ready.exists()  # PostgreSQL kept the segment, to retry
        log = archiving.server.log_file.read_text()
        assert f"REFUSED {upcoming}" in log and "already archived with different content" in log
    finally:
        impostor.unlink()
        (archiving.directory / f"{upcoming}.sha256").unlink()
    # With the impostor gone, the next attempt (woken by the next segment) archives the real one.
    following = archiving.switch()
    archiving.wait_archived(following, timeout=90)
    assert sha256_file(archiving.directory / upcoming)[1] == read_checksum(archiving.directory, upcoming)


def test_the_continuity_check_names_a_missing_and_a_corrupted_segment(archiving, state):
    backup_id = base_backup(archiving, "continuity")
    start, end = backup_wal_range(archiving.root / DB / backup_id)
    names = [archiving.switch() for _ in range(3)]
    archiving.wait_archived(names[-1])
    wait_for(lambda: (archiving.directory / end.name).exists(), 30, what="the backup's end segment archived")

    ok = check_archive(archiving.root, DB, backup_id)
    assert ok.status == "ok", ok.reason
    assert ok.start_segment == start.name and ok.newest_segment == names[-1]
    assert ok.rpo_seconds is not None and ok.rpo_seconds < 60

    missing = names[1]
    aside = archiving.root / "aside"
    shutil.move(archiving.directory / missing, aside)
    try:
        gap = check_archive(archiving.root, DB, backup_id)
        assert gap.status == "gap" and gap.first_missing == missing
        assert gap.reason.startswith(f"WAL gap: {missing} is missing from the archive")
    finally:
        shutil.move(aside, archiving.directory / missing)

    damaged = archiving.directory / names[0]
    original = damaged.read_bytes()
    with open(damaged, "r+b") as fh:  # one byte changed in the middle
        fh.seek(8 * 1024 * 1024)
        byte = fh.read(1)
        fh.seek(8 * 1024 * 1024)
        fh.write(bytes([byte[0] ^ 0xFF]))
    try:
        corrupt = check_archive(archiving.root, DB, backup_id)
        assert corrupt.status == "corrupt"
        assert corrupt.corrupt == [
            f"{names[0]}: sha256 differs from the one stored at archiving (the bytes changed)"
        ]
    finally:
        damaged.write_bytes(original)
    assert check_archive(archiving.root, DB, backup_id).ok


def test_wal_retention_keeps_what_a_kept_base_backup_needs(archiving, state):
    first = base_backup(archiving, "retention-1")
    for _ in range(2):
        archiving.switch()
    second = base_backup(archiving, "retention-2")
    archiving.wait_archived(archiving.switch())
    start_first = backup_wal_range(archiving.root / DB / first)[0]
    start_second = backup_wal_range(archiving.root / DB / second)[0]
    assert start_first < start_second
    files = [f.name for f in list_archive(archiving.directory)]
    older = [n for n in files if n[:24] < start_first.name and not n.endswith(".history")]

    both = apply_wal_retention(archiving.root, DB, [first, second])
    assert both["boundary"] == start_first.name and both["deleted_files"] == len(older)
    assert all(not (archiving.directory / n).exists() for n in older)
    assert (archiving.directory / start_first.name).exists()

    dry = apply_wal_retention(archiving.root, DB, [second], dry_run=True)
    assert dry["delete_files"] > 0 and dry["deleted_files"] == 0
    assert (archiving.directory / start_first.name).exists()

    only_second = apply_wal_retention(archiving.root, DB, [second])
    assert only_second["boundary"] == start_second.name
    assert only_second["reason"] == (
        f"keeping WAL from {start_second.name}, the start of the oldest kept base backup {second}"
    )
    left = sorted(f.name for f in list_archive(archiving.directory) if len(f.name) == 24)
    assert left[0] == start_second.name  # nothing the kept backup needs is gone
    assert not (archiving.directory / f"{start_first.name}.sha256").exists()
    assert check_archive(archiving.root, DB, second).ok


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_leaves_nothing_partial_and_exits_non_zero(archiving, shared_tmp):
    name = archiving.switch()
    stored = archiving.wait_archived(name)
    source = shared_tmp / "segment"
    shutil.copy2(stored, source)
    os.chmod(source, 0o644)
    full = shared_tmp / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0777", "tmpfs", str(full)], check=True)
    try:
        proc = archiving.push(source, name, root=full)
        assert proc.returncode == 1
        assert f"FAILED {name}" in proc.stderr and "No space left on device" in proc.stderr
        directory = archive_dir(full, DB)
        assert sorted(p.name for p in directory.iterdir()) == []  # no segment, checksum or temp file
    finally:
        subprocess.run(["umount", str(full)], check=True)

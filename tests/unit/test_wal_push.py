"""``python -m opsdag wal push``: stored once, durably, with its sha256; refused or failed leaves nothing."""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from opsdag.backups.wal_push import PushFailed, PushRefused, archive_dir, push

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
NAME = "000000010000000000000003"


def segment(path: Path, seed: bytes, size: int = 1 << 20) -> Path:
    path.write_bytes((hashlib.sha256(seed).digest() * (size // 32 + 1))[:size])
    return path


def wal_push(*args: str, root: Path, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(PLUGINS)}
    return subprocess.run(
        [sys.executable, "-m", "opsdag", "wal", "push", "--storage", str(root), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,
    )


def visible(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_a_segment_is_stored_with_its_sha256_and_a_second_push_of_it_succeeds(tmp_path):
    source = segment(tmp_path / "pg_wal_file", b"a")
    directory = archive_dir(tmp_path / "backups", "demo-db")
    first = push(source, NAME, directory)
    assert first.status == "archived" and first.path == directory / NAME
    assert (directory / NAME).read_bytes() == source.read_bytes()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert (directory / f"{NAME}.sha256").read_text() == f"{digest}  {NAME}\n"  # sha256sum -c reads it
    again = push(source, NAME, directory)
    assert again.status == "already archived" and again.sha256 == digest
    assert visible(directory) == [NAME, f"{NAME}.sha256"]


def test_a_different_segment_under_a_stored_name_is_refused_and_the_stored_one_kept(tmp_path):
    directory = archive_dir(tmp_path / "backups", "demo-db")
    push(segment(tmp_path / "a", b"a"), NAME, directory)
    stored = (directory / NAME).read_bytes()
    with pytest.raises(PushRefused, match="already archived with different content"):
        push(segment(tmp_path / "b", b"b"), NAME, directory)
    assert (directory / NAME).read_bytes() == stored and visible(directory) == [NAME, f"{NAME}.sha256"]


def test_a_lost_checksum_is_written_again_by_the_retry(tmp_path):
    directory = archive_dir(tmp_path / "backups", "demo-db")
    source = segment(tmp_path / "a", b"a")
    push(source, NAME, directory)
    (directory / f"{NAME}.sha256").unlink()
    assert push(source, NAME, directory).status == "already archived"
    assert (
        (directory / f"{NAME}.sha256").read_text().startswith(hashlib.sha256(source.read_bytes()).hexdigest())
    )


def test_names_postgresql_does_not_archive_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not a WAL file name"):
        push(segment(tmp_path / "a", b"a"), "../../etc/passwd", tmp_path / "wal")
    with pytest.raises(PushFailed, match="does not exist"):
        push(tmp_path / "missing", NAME, tmp_path / "wal")
    assert visible(tmp_path / "wal") == []


def test_the_command_line_exit_codes_are_what_postgresql_needs(tmp_path):
    root = tmp_path / "backups"
    segment(tmp_path / "pg_wal_file", b"a")
    ok = wal_push("--database", "demo-db", "pg_wal_file", NAME, root=root, cwd=tmp_path)  # %p is relative
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"opsdag wal push: archived {NAME} (1048576 bytes, sha256 ")
    again = wal_push("--database", "demo-db", "pg_wal_file", NAME, root=root, cwd=tmp_path)
    assert again.returncode == 0 and "already archived" in again.stdout
    segment(tmp_path / "other", b"b")
    refused = wal_push("--database", "demo-db", "other", NAME, root=root, cwd=tmp_path)
    assert refused.returncode == 1 and f"REFUSED {NAME}" in refused.stderr
    no_db = wal_push("pg_wal_file", NAME, root=root, cwd=tmp_path)
    assert no_db.returncode == 2 and "give --database NAME (or set OPSDAG_WAL_DATABASE)" in no_db.stderr
    remote = subprocess.run(
        [
            sys.executable,
            "-m",
            "opsdag",
            "wal",
            "push",
            "--database",
            "x",
            "--storage",
            "s3://b/k",
            "a",
            NAME,
        ],
        env={"PYTHONPATH": str(PLUGINS)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert remote.returncode == 2 and "not a URL" in remote.stderr


def test_the_push_imports_no_airflow_and_no_pydantic(tmp_path):
    segment(tmp_path / "f", b"a")
    code = (
        "import sys; from opsdag.cli import main; rc = main(sys.argv[1:]);"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('airflow', 'pydantic', 'yaml')];"
        "print(heavy); sys.exit(rc)"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "wal",
            "push",
            "--database",
            "d",
            "--storage",
            str(tmp_path / "r"),
            "f",
            NAME,
        ],
        cwd=tmp_path,
        env={"PYTHONPATH": str(PLUGINS)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("[]")


def test_a_write_that_fails_half_way_leaves_nothing_and_exits_non_zero(tmp_path):
    """A file size limit makes the copy fail after 256 KiB, as a full disk would (EFBIG like ENOSPC)."""
    segment(tmp_path / "big", b"a", size=4 << 20)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))

    proc = wal_push("--database", "demo-db", "big", NAME, root=tmp_path / "r", cwd=tmp_path, preexec_fn=limit)
    assert proc.returncode == 1 and f"FAILED {NAME}" in proc.stderr and "too large" in proc.stderr
    assert visible(archive_dir(tmp_path / "r", "demo-db")) == []  # no segment, no checksum, no temp file

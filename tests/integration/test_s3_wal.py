# ruff: noqa: F811  (pytest fixtures imported from a helper module are redefined as arguments)
"""WAL archiving into S3 over HTTP (moto's server on loopback), credentials from the Airflow connection.

``python -m opsdag wal push --storage s3://... --conn-id ID`` is run as PostgreSQL's archiver
runs it (a process per segment); the continuity check and WAL retention read the same
archive through the backup store's ObjectStoragePath. Segments here are 1 MiB files of
random bytes under real WAL names (the smallest ``wal_segment_size``): what is tested is the
storage protocol, PostgreSQL's own archiving is covered by tests/integration/test_wal_archive.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from s3_fixtures import S3Bucket, s3_bucket, s3_server  # noqa: F401

from opsdag.backups.storage import BackupStore
from opsdag.backups.wal_archive import check_archive, list_archive
from opsdag.backups.wal_names import segment_of
from opsdag.backups.wal_push_remote import push_remote, remote_archive_dir
from opsdag.backups.wal_retention import apply_wal_retention

pytestmark = pytest.mark.integration

DB = "wal-db"
SEGMENT = 1 << 20  # 1 MiB segments
PLUGINS = Path(__file__).resolve().parents[2] / "plugins"


def name_of(number: int) -> str:
    return segment_of(number * SEGMENT, 1, SEGMENT).name


def segment_file(tmp_path: Path, number: int, salt: bytes = b"") -> Path:
    path = tmp_path / f"seg-{number}{salt.decode()}"
    path.write_bytes(hashlib.sha256(b"%d" % number + salt).digest() * (SEGMENT // 32))
    return path


def wal_push(bucket: S3Bucket, source: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    """The archive_command: one process per segment."""
    argv = [
        sys.executable,
        "-m",
        "opsdag",
        "wal",
        "push",
        "--database",
        DB,
        "--storage",
        bucket.url("backups"),
    ]
    argv += ["--conn-id", bucket.conn_id, *extra, str(source), name]
    env = {**os.environ, "PYTHONPATH": str(PLUGINS)}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def stored(bucket: S3Bucket, key: str) -> bytes:
    return bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read()


def test_wal_push_to_s3_stores_the_checksum_first_and_never_overwrites(s3_bucket, s3_server, tmp_path):
    source, name = segment_file(tmp_path, 2), name_of(2)
    key = f"backups/{DB}/wal/{name}"

    s3_server.recorded()
    first = wal_push(s3_bucket, source, name)
    puts = [k for method, k in s3_server.recorded(start=False) if method == "PUT"]
    assert first.returncode == 0, first.stderr
    assert f"archived {name} ({SEGMENT} bytes" in first.stdout
    assert puts == [f"{s3_bucket.name}/{key}.sha256", f"{s3_bucket.name}/{key}"]  # never a segment alone
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert stored(s3_bucket, key) == source.read_bytes()
    assert stored(s3_bucket, key + ".sha256").decode() == f"{digest}  {name}\n"

    again = wal_push(s3_bucket, source, name, "--quiet")  # PostgreSQL retries after a crash
    assert again.returncode == 0 and again.stdout == "", again.stderr

    other = segment_file(tmp_path, 2, salt=b"-other-cluster")
    refused = wal_push(s3_bucket, other, name)
    assert refused.returncode == 1 and f"REFUSED {name}" in refused.stderr
    assert "already archived with different content" in refused.stderr
    assert stored(s3_bucket, key) == source.read_bytes()  # kept as it was
    assert stored(s3_bucket, key + ".sha256").decode().split()[0] == digest
    assert s3_bucket.keys(f"backups/{DB}/wal/") == [key, key + ".sha256"]


def test_wal_push_to_a_refusing_store_fails_and_leaves_nothing(s3_bucket, tmp_path):
    source, name = segment_file(tmp_path, 3), name_of(3)
    missing = S3Bucket("opsdag-no-such-bucket", s3_bucket.conn_id, s3_bucket.endpoint, s3_bucket.client)
    failed = wal_push(missing, source, name)
    assert failed.returncode == 1 and f"FAILED {name}" in failed.stderr
    assert "s3://opsdag-no-such-bucket/backups/wal-db/wal" in failed.stderr, failed.stderr

    no_conn = subprocess.run(
        [
            sys.executable,
            "-m",
            "opsdag",
            "wal",
            "push",
            "--database",
            DB,
            "--storage",
            s3_bucket.url(),
            str(source),
            name,
        ],
        env={**os.environ, "PYTHONPATH": str(PLUGINS)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no_conn.returncode == 2 and "--conn-id" in no_conn.stderr
    assert s3_bucket.keys() == []


def test_a_push_that_died_after_its_checksum_is_retried_to_completion(s3_bucket, tmp_path):
    source, name = segment_file(tmp_path, 4), name_of(4)
    key = f"backups/{DB}/wal/{name}"
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=key + ".sha256", Body=b"0" * 64 + b"  x\n")
    assert list_archive(remote_archive_dir(s3_bucket.url("backups"), s3_bucket.conn_id, DB)) == []
    result = wal_push(s3_bucket, source, name)
    assert result.returncode == 0, result.stderr
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert stored(s3_bucket, key + ".sha256").decode() == f"{digest}  {name}\n"


def test_reading_the_archive_in_a_worker_leaves_its_airflow_logging_alone(s3_bucket, monkeypatch):
    """Quieting Airflow is the `opsdag wal push` process's business: a worker (or any long-lived
    process) that reads the archive must not pass WARNING on to the Airflow processes it starts."""
    monkeypatch.delenv("AIRFLOW__LOGGING__LOGGING_LEVEL", raising=False)
    assert list_archive(remote_archive_dir(s3_bucket.url("backups"), s3_bucket.conn_id, DB)) == []
    assert "AIRFLOW__LOGGING__LOGGING_LEVEL" not in os.environ


def physical_backup_on_s3(bucket: S3Bucket, backup_id: str, first: int, last: int) -> None:
    """The two objects continuity and WAL retention read of a physical base backup."""
    prefix = f"backups/{DB}/{backup_id}"
    ranges = {
        "WAL-Ranges": [
            {"Timeline": 1, "Start-LSN": f"0/{first * SEGMENT:X}", "End-LSN": f"0/{last * SEGMENT + 4096:X}"}
        ]
    }
    bucket.client.put_object(
        Bucket=bucket.name, Key=f"{prefix}/data/backup_manifest", Body=json.dumps(ranges).encode()
    )
    bucket.client.put_object(
        Bucket=bucket.name, Key=f"{prefix}/manifest.json", Body=b'{"method": "physical"}'
    )


def test_continuity_and_wal_retention_read_the_archive_on_s3(s3_bucket, tmp_path):
    store = BackupStore(s3_bucket.url("backups"), conn_id=s3_bucket.conn_id)
    directory = remote_archive_dir(s3_bucket.url("backups"), s3_bucket.conn_id, DB)
    for number in range(1, 9):
        assert push_remote(segment_file(tmp_path, number), name_of(number), directory).status == "archived"
    physical_backup_on_s3(s3_bucket, "20260101T000000Z-aaaaaa", 3, 3)
    physical_backup_on_s3(s3_bucket, "20260102T000000Z-bbbbbb", 5, 6)

    verdict = check_archive(store.root, DB, "20260102T000000Z-bbbbbb")
    assert verdict.status == "ok", verdict.reason
    assert (verdict.start_segment, verdict.newest_segment, verdict.segments) == (name_of(5), name_of(8), 4)

    seg7 = f"backups/{DB}/wal/{name_of(7)}"
    good = stored(s3_bucket, seg7)
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=seg7, Body=good[:-1] + b"\x00")
    verdict = check_archive(store.root, DB, "20260102T000000Z-bbbbbb")
    assert verdict.status == "corrupt", verdict.reason
    assert verdict.corrupt[0].startswith(f"{name_of(7)}: sha256 differs")
    s3_bucket.client.delete_object(Bucket=s3_bucket.name, Key=f"backups/{DB}/wal/{name_of(6)}")
    verdict = check_archive(store.root, DB, "20260102T000000Z-bbbbbb")
    assert verdict.status == "gap" and verdict.first_missing == name_of(6), verdict.reason
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=seg7, Body=good)

    young_orphan = f"backups/{DB}/wal/{name_of(9)}.sha256"  # a push in progress: kept
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=young_orphan, Body=b"0" * 64 + b"\n")
    result = apply_wal_retention(store.root, DB, ["20260102T000000Z-bbbbbb"])
    assert result["boundary"] == name_of(5) and result["deleted_files"] == 4, result
    names = sorted(f.name for f in list_archive(directory))
    assert names == [name_of(5), name_of(7), name_of(8)]
    keys = s3_bucket.keys(f"backups/{DB}/wal/")
    assert young_orphan in keys and not [k for k in keys if any(name_of(n) in k for n in range(1, 5))]

    kept_both = apply_wal_retention(store.root, DB, ["20260101T000000Z-aaaaaa", "20260102T000000Z-bbbbbb"])
    assert kept_both["deleted_files"] == 0

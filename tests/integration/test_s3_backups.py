# ruff: noqa: F811  (pytest fixtures imported from a helper module are redefined as arguments)
"""Backups on S3 over HTTP (moto's server on loopback), through opsdag's real code paths.

The store is ``BackupStore("s3://<bucket>/backups", conn_id=...)``: Airflow's
ObjectStoragePath with the amazon provider, credentials and endpoint from the Airflow
connection only. What is checked is what a user relies on: a published backup is whole and
verified; a backup being written, or one without its manifest, does not exist; the manifest
is the last object written and the first deleted (seen in the order of the HTTP requests
the S3 server received); retention deletes old backups' objects; a drill restores from S3.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pg_fixtures import make_db, pg_server, table_rows, target_for  # noqa: F401
from s3_fixtures import S3Bucket, s3_bucket, s3_server  # noqa: F401
from support.waiting import wait_for

from opsdag.backups import drill_engine as drill
from opsdag.backups import drill_verification, engine
from opsdag.backups.drill_pick import pick_backup
from opsdag.backups.retention import RetentionPolicy
from opsdag.backups.storage import BackupStore

pytestmark = pytest.mark.integration

DB = "demo-db"


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSDAG_STATE_DIR", str(tmp_path / "state"))


def s3_store(bucket: S3Bucket) -> BackupStore:
    return BackupStore(bucket.url("backups"), conn_id=bucket.conn_id)


def backup_on(store: BackupStore, target, when: datetime, run_id: str = "run") -> str:
    backup_id = engine.backup_id_for(when, run_id)
    engine.take_backup(target, store, DB, backup_id, engine.BackupOptions())
    engine.publish_manifest(store, DB, backup_id)
    return backup_id


def test_a_logical_backup_is_written_published_and_verified_on_s3(pg_server, make_db, s3_bucket, s3_server):
    dbname = make_db(orders=500)
    store = s3_store(s3_bucket)
    assert not store.is_local and store.root.protocol == "s3"
    backup_id = engine.backup_id_for(datetime.now(UTC), "s3-run")

    engine.take_backup(target_for(pg_server, dbname), store, DB, backup_id, engine.BackupOptions())
    partial_keys = s3_bucket.keys(f"backups/{DB}/")
    assert partial_keys and all(k.startswith(f"backups/{DB}/.partial-{backup_id}/") for k in partial_keys)
    assert [(b.id, b.state) for b in store.list_backups(DB)] == [(backup_id, "partial")]
    assert store.read_manifest(DB, backup_id) is None and store.newest_verified(DB) is None

    s3_server.recorded()
    manifest = engine.publish_manifest(store, DB, backup_id)
    requests = s3_server.recorded(start=False)
    puts = [key for method, key in requests if method == "PUT"]  # uploads and server-side copies
    manifest_key = f"{s3_bucket.name}/backups/{DB}/{backup_id}/manifest.json"
    assert puts[-1] == manifest_key and puts.count(manifest_key) == 1, puts[-3:]  # last: the backup exists
    assert sum(f"/{backup_id}/data/" in key for key in puts[:-1]) == len(manifest.files)  # data moved first

    keys = s3_bucket.keys(f"backups/{DB}/")
    assert not [k for k in keys if "/.partial-" in k]
    data_keys = {k.split(f"{backup_id}/", 1)[1] for k in keys if "/data/" in k}
    assert data_keys == {f.path for f in manifest.files} and "data/toc.dat" in data_keys
    stored = json.loads(
        s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=manifest_key.split("/", 1)[1])["Body"].read()
    )
    assert stored["id"] == backup_id and stored["database"] == DB

    result = engine.verify(store, DB, backup_id)
    assert result["status"] == "verified", result["problems"]
    assert "pg_restore --list" in result["contents"]
    assert [(b.id, b.state) for b in store.list_backups(DB)] == [(backup_id, "verified")]
    assert store.location(DB, backup_id) == f"s3://{s3_bucket.name}/backups/{DB}/{backup_id}"


def test_a_reader_polling_during_the_backup_never_sees_it_before_it_is_whole(pg_server, make_db, s3_bucket):
    """A second reader lists the backups all through take_backup + publish_manifest: it sees the
    backup as in progress (or not at all) until the manifest is written, and from then on every
    file the manifest names is already stored."""
    dbname = make_db(orders=3000)
    store = s3_store(s3_bucket)
    backup_id = engine.backup_id_for(datetime.now(UTC), "observed")
    seen: list[tuple[str, bool]] = []
    done = threading.Event()

    def observe() -> None:
        reader = s3_store(s3_bucket)
        while not done.is_set():
            for b in reader.list_backups(DB):
                whole = True
                if b.state != "partial":
                    keys = set(s3_bucket.keys(f"backups/{DB}/{backup_id}/"))
                    whole = all(f"backups/{DB}/{backup_id}/{f.path}" in keys for f in b.manifest.files)
                seen.append((b.state, whole))

    observer = threading.Thread(target=observe)
    observer.start()
    try:
        engine.take_backup(target_for(pg_server, dbname), store, DB, backup_id, engine.BackupOptions())
        engine.publish_manifest(store, DB, backup_id)
        wait_for(
            lambda: any(state != "partial" for state, _ in seen), timeout=30, what="the reader seeing it"
        )
    finally:
        done.set()
        observer.join(timeout=30)
    states = [state for state, _ in seen]
    assert "partial" in states and states[-1] == "unverified"  # seen in progress, then published
    first_published = states.index("unverified")
    assert set(states[:first_published]) == {"partial"} and set(states[first_published:]) == {"unverified"}
    assert all(whole for _, whole in seen)


def test_a_backup_without_its_manifest_does_not_exist_and_a_corrupted_object_is_found(
    pg_server, make_db, s3_bucket
):
    dbname = make_db(orders=200)
    store = s3_store(s3_bucket)
    backup_id = backup_on(store, target_for(pg_server, dbname), datetime.now(UTC))
    prefix = f"backups/{DB}/{backup_id}/"

    toc = prefix + "data/toc.dat"
    body = s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=toc)["Body"].read()
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=toc, Body=body[:-1] + bytes([body[-1] ^ 1]))
    bad = engine.verify(store, DB, backup_id)
    assert bad["status"] == "bad" and bad["problems"] == ["data/toc.dat: sha256 differs from the manifest"]

    s3_bucket.client.delete_object(Bucket=s3_bucket.name, Key=prefix + "manifest.json")
    assert store.read_manifest(DB, backup_id) is None
    assert [(b.id, b.state) for b in store.list_backups(DB)] == [(backup_id, "partial")]
    with pytest.raises(drill.DrillError, match="is partial, not verified"):
        pick_backup(store, DB, backup_id)
    with pytest.raises(engine.BackupError, match="does not exist"):
        engine.verify(store, DB, backup_id)


def test_retention_deletes_old_backups_on_s3_manifest_first(pg_server, make_db, s3_bucket, s3_server):
    dbname = make_db(orders=100)
    store = s3_store(s3_bucket)
    target = target_for(pg_server, dbname)
    now = datetime.now(UTC)
    ids = [backup_on(store, target, now - timedelta(days=3 - i), f"run-{i}") for i in range(3)]
    for backup_id in ids:
        assert engine.verify(store, DB, backup_id)["status"] == "verified"

    s3_server.recorded()
    result = engine.apply_retention(store, DB, RetentionPolicy(keep_last=1, daily=0, weekly=0, monthly=0))
    requests = s3_server.recorded(start=False)

    assert sorted(result["deleted"]) == sorted(ids[:2]) and list(result["keep"]) == [ids[2]]
    remaining = s3_bucket.keys(f"backups/{DB}/")
    assert remaining and all(k.startswith(f"backups/{DB}/{ids[2]}/") for k in remaining)
    assert [b.id for b in store.list_backups(DB)] == [ids[2]]
    for doomed in ids[:2]:  # each deleted backup stopped existing before its files went
        deletes = [key for method, key in requests if method == "DELETE" and f"/{doomed}/" in key]
        assert len(deletes) > 1 and deletes[0].endswith(f"{doomed}/manifest.json"), deletes[:2]


def test_a_drill_restores_a_backup_from_s3(pg_server, make_db, s3_bucket, tmp_path):
    dbname = make_db(orders=300)
    store = s3_store(s3_bucket)
    backup_id = backup_on(store, target_for(pg_server, dbname), datetime.now(UTC))
    assert engine.verify(store, DB, backup_id)["status"] == "verified"

    picked = pick_backup(store, DB)
    assert picked.backup.id == backup_id
    manifest = store.read_manifest(DB, backup_id)
    names = drill.drill_names(f"drill__{DB}", "manual__s3", DB)
    server = target_for(pg_server, "postgres")
    drill.provision_database(server, names)
    try:
        drill.restore(store, DB, manifest, names, target=server, jobs=2)
        restored = server.with_db(names.scratch_db)
        with restored.connect() as conn:
            assert drill_verification.verify_restored(conn, manifest, [])["ok"]
        assert table_rows(restored) == table_rows(target_for(pg_server, dbname))
    finally:
        assert drill.teardown(server, names)["clean"]


def test_a_bucket_refusing_the_upload_fails_the_backup_naming_it(pg_server, make_db, s3_bucket):
    dbname = make_db(orders=50)
    url = f"s3://opsdag-no-such-bucket-{s3_bucket.name[-6:]}/backups"
    store = BackupStore(url, conn_id=s3_bucket.conn_id)
    backup_id = engine.backup_id_for(datetime.now(UTC), "refused")
    with pytest.raises(engine.StorageRefused, match=f"the storage {url} refused the write"):
        engine.take_backup(target_for(pg_server, dbname), store, DB, backup_id, engine.BackupOptions())
    assert store.list_backups(DB) == []
    scratch = Path(os.environ["OPSDAG_STATE_DIR"]) / "scratch" / "backups" / DB / backup_id
    assert not scratch.exists()  # the local copy of the dump is gone too


def test_a_physical_backup_on_s3_is_verified_gives_its_wal_range_and_a_drill_boots_it(
    pg_server, make_db, s3_bucket
):
    from opsdag.backups.wal_archive import backup_wal_range

    dbname = make_db(orders=500)
    store = s3_store(s3_bucket)
    backup_id = engine.backup_id_for(datetime.now(UTC), "physical-s3")
    options = engine.BackupOptions(method="physical", compression="gzip", level=1)
    engine.take_backup(target_for(pg_server, dbname), store, DB, backup_id, options)
    manifest = engine.publish_manifest(store, DB, backup_id)
    assert "data/backup_manifest" in {f.path for f in manifest.files}
    result = engine.verify(store, DB, backup_id)  # downloads the tars, runs pg_verifybackup
    assert result["status"] == "verified", result["problems"]
    assert result["contents"].startswith("pg_verifybackup: backup successfully verified")

    start, end = backup_wal_range(store.backup_dir(DB, backup_id))  # read from S3
    assert start.number <= end.number

    names = drill.drill_names(f"drill__{DB}", "manual__s3_physical", DB)
    try:
        drill.restore(store, DB, manifest, names, target=None, jobs=2)
        copy = drill.restored_target(
            manifest, names, None, drill.physical_role(manifest, pg_server.superuser)
        )
        copy = copy.with_db(dbname)
        assert table_rows(copy) == table_rows(target_for(pg_server, dbname))
    finally:
        assert drill.teardown(None, names)["clean"]

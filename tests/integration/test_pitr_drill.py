"""Point-in-time recovery against a real PostgreSQL 15 archiving with ``opsdag wal push``.

A verified base backup, rows written before and after a target time, the WAL archived:
the drill's plan, restore and verification bring back exactly the rows committed up to
the target, refuse targets the archive does not cover, and refuse a corrupted segment.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pg_fixtures import target_for
from wal_fixtures import Archiving, archiving_server, base_backup

from opsdag.backups import pitr
from opsdag.backups.pitr_plan import TargetRefused, parse_target
from opsdag.backups.pitr_verification import verify_recovered
from opsdag.backups.storage import BackupStore
from opsdag.backups.tempserver import TempServer

pytestmark = pytest.mark.integration

DB = "pitr-db"
MARKER = {"table": "public.marker", "time_column": "written_at"}


@pytest.fixture(scope="module")
def archiving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archiving]:
    with archiving_server(tmp_path_factory.mktemp("pitr"), DB) as server:
        server.sql(
            "CREATE TABLE marker (seq serial PRIMARY KEY, note text, "
            "written_at timestamptz NOT NULL DEFAULT clock_timestamp());"
        )
        yield server


def write(archiving: Archiving, note: str, rows: int) -> None:
    for _ in range(rows):  # one transaction each, as the sandbox's marker writer does
        archiving.sql(f"INSERT INTO marker (note) VALUES ('{note}');")


def server_now(archiving: Archiving) -> datetime:
    return datetime.fromisoformat(archiving.sql("SELECT to_json(clock_timestamp())#>>'{}';"))


def archive_all(archiving: Archiving) -> None:
    """Close the current segment and wait until it is in the archive."""
    archiving.wait_archived(archiving.switch(), timeout=60)


@pytest.fixture(scope="module")
def history(archiving: Archiving) -> dict[str, object]:
    """A verified base backup, then 3 rows 'before', the target, 2 rows 'after', all archived."""
    backup_id = base_backup(archiving, "pitr", verify=True)
    write(archiving, "before", 3)
    target = server_now(archiving)
    write(archiving, "after", 2)
    archive_all(archiving)
    return {"backup_id": backup_id, "target": target}


@pytest.fixture
def restored(tmp_path: Path) -> Iterator[list[TempServer]]:
    servers: list[TempServer] = []
    yield servers
    for server in servers:
        server.stop()


def recover(archiving: Archiving, target: str, work: Path, servers: list[TempServer]) -> dict[str, object]:
    store = BackupStore(archiving.root)
    planned = pitr.plan(store, DB, parse_target(target), requested=None)
    base = planned["base"]
    server = pitr.start_recovered(
        store.local(store.backup_dir(DB, base.id) / "data"), work, 15, planned["recovery"]
    )
    servers.append(server)
    return {"planned": planned, "server": server}


def notes(server: TempServer) -> list[str]:
    with server.target("postgres", "postgres").connect() as conn:
        return [row[0] for row in conn.execute("SELECT note FROM marker ORDER BY seq")]


def test_recovery_to_a_time_between_two_writes_brings_back_exactly_the_rows_before_it(
    archiving, history, tmp_path, restored
):
    target = history["target"].isoformat()
    run = recover(archiving, target, tmp_path / "server", restored)
    assert run["planned"]["base"].id == history["backup_id"]
    assert notes(run["server"]) == ["before"] * 3

    source = target_for(archiving.server, "postgres")
    with run["server"].target("postgres", "postgres").connect() as conn:
        result = verify_recovered(conn, [], target=target, marker=MARKER, source_connect=source.connect)
    assert result["ok"], result
    proof = result["recovery"]["marker"]
    assert proof["restored"]["rows"] == proof["source"]["rows"] == 3
    assert result["recovery"]["promoted"] is True
    last = datetime.fromisoformat(result["recovery"]["last_transaction_at"])
    assert last <= history["target"]  # the RPO is target - last: what was committed just before it
    assert history["target"] - last < timedelta(seconds=30)


def test_latest_replays_everything_archived(archiving, history, tmp_path, restored):
    run = recover(archiving, "latest", tmp_path / "server", restored)
    assert notes(run["server"]) == ["before"] * 3 + ["after"] * 2
    source = target_for(archiving.server, "postgres")
    with run["server"].target("postgres", "postgres").connect() as conn:
        result = verify_recovered(conn, [], target="latest", marker=MARKER, source_connect=source.connect)
    assert result["ok"], result


def test_the_marker_proof_fails_when_a_row_written_before_the_target_is_missing(
    archiving, history, tmp_path, restored
):
    target = history["target"].isoformat()
    run = recover(archiving, target, tmp_path / "server", restored)
    with run["server"].target("postgres", "postgres").connect() as conn:
        conn.execute("DELETE FROM marker WHERE seq = 2")
        conn.commit()
        source = target_for(archiving.server, "postgres")
        result = verify_recovered(conn, [], target=target, marker=MARKER, source_connect=source.connect)
    assert not result["ok"]
    assert "2 marker rows restored, 3 written up to" in result["recovery"]["problems"][0]


def test_targets_outside_the_archive_are_refused_naming_the_range(archiving, history):
    store = BackupStore(archiving.root)
    early = (history["target"] - timedelta(days=1)).isoformat()
    with pytest.raises(
        TargetRefused,
        match=r"before the oldest verified base backup of pitr-db: its backups can restore from .* to ",
    ):
        pitr.plan(store, DB, parse_target(early), requested=None)
    late = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    refused = r"after the newest transaction archived .* can restore from .* to "
    with pytest.raises(TargetRefused, match=refused):
        pitr.plan(store, DB, parse_target(late), requested=None)


def test_a_corrupted_segment_stops_the_recovery_before_it_starts(archiving, history):
    store = BackupStore(archiving.root)
    planned = pitr.plan(store, DB, parse_target("latest"), requested=None)
    victim = archiving.directory / planned["recovery"]["wal"]["start_segment"]
    original = victim.read_bytes()
    try:
        with open(victim, "r+b") as fh:  # one flipped byte inside the segment
            fh.seek(4096 * 3)
            byte = fh.read(1)
            fh.seek(4096 * 3)
            fh.write(bytes([byte[0] ^ 0xFF]))
        with pytest.raises(TargetRefused, match=rf"{victim.name}: sha256 differs"):
            pitr.plan(store, DB, parse_target("latest"), requested=None)
    finally:
        victim.write_bytes(original)

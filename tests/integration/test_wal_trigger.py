"""``WalArchiveTrigger`` against a real archiving PostgreSQL 15: it waits, without a worker,
until the archive reaches the base backup's end segment, and gives up at its deadline."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from wal_fixtures import Archiving, archiving_server, base_backup

from opsdag.backups.wal_archive import backup_wal_range
from opsdag.triggers.wal_archive import WalArchiveTrigger

pytestmark = pytest.mark.integration

DB = "wal-trigger-db"


@pytest.fixture(scope="module")
def archiving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archiving]:
    with archiving_server(tmp_path_factory.mktemp("wal-trigger"), DB) as server:
        yield server


def first_event(trigger: WalArchiveTrigger) -> dict:
    async def run() -> dict:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(asyncio.wait_for(run(), timeout=60))


def without_end_segment(archiving: Archiving, backup_id: str, tmp_path: Path) -> tuple[Path, Path]:
    """Take the backup's end segment out of the archive (as if not archived yet); where it went."""
    end = backup_wal_range(archiving.root / DB / backup_id)[1].name
    archiving.wait_archived(end)
    held = tmp_path / "held"
    held.mkdir()
    for name in (end, f"{end}.sha256"):
        shutil.move(archiving.directory / name, held / name)
    return held, archiving.directory


def trigger(archiving: Archiving, backup_id: str, seconds: float) -> WalArchiveTrigger:
    return WalArchiveTrigger(
        url=str(archiving.root),
        conn_id=None,
        database=DB,
        backup_id=backup_id,
        deadline=time.time() + seconds,
        poll=0.2,
    )


def test_the_trigger_fires_once_the_end_segment_is_archived(archiving, tmp_path):
    backup_id = base_backup(archiving, "trigger-ok")
    held, directory = without_end_segment(archiving, backup_id, tmp_path)
    assert trigger(archiving, backup_id, 0).status()["status"] == "waiting"

    def archive_it() -> None:  # the archiver catching up a moment later
        time.sleep(1.0)
        for path in held.iterdir():
            shutil.move(path, directory / path.name)

    catch_up = threading.Thread(target=archive_it)
    catch_up.start()
    started = time.monotonic()
    event = first_event(trigger(archiving, backup_id, 30))
    catch_up.join()
    assert event["status"] == "ok", event
    assert 0.9 < time.monotonic() - started < 10


def test_the_trigger_gives_up_at_its_deadline_still_waiting(archiving, tmp_path):
    backup_id = base_backup(archiving, "trigger-late")
    held, directory = without_end_segment(archiving, backup_id, tmp_path)
    try:
        started = time.monotonic()
        event = first_event(trigger(archiving, backup_id, 1.0))
        assert event["status"] == "waiting" and "the base backup's" in event["reason"]
        assert time.monotonic() - started < 5
    finally:
        for path in held.iterdir():
            shutil.move(path, directory / path.name)

"""Which backup a drill restores: the param, the one its Asset event names, or the newest verified."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from opsdag.backups.drill_engine import DrillError
from opsdag.backups.drill_pick import BackupAnnouncement, announced_backup, choose_backup
from opsdag.backups.storage import StoredBackup

T0 = datetime(2026, 3, 1, 2, tzinfo=UTC)
OLD, MIDDLE, BAD, NEW = (
    "20260301T020000Z-aaaaaa",
    "20260302T020000Z-bbbbbb",
    "20260303T020000Z-cccccc",
    "20260304T020000Z-dddddd",
)
BACKUPS = [
    StoredBackup(OLD, "verified", T0),
    StoredBackup(MIDDLE, "verified", T0 + timedelta(days=1)),
    StoredBackup(BAD, "bad", T0 + timedelta(days=2)),
    StoredBackup(NEW, "verified", T0 + timedelta(days=3)),
]


def event(backup_id: str | None, minutes: int, run_id: str = "scheduled__x") -> SimpleNamespace:
    """An asset event as the Task SDK gives it in ``triggering_asset_events``."""
    extra = {"database": "shop", "backup_id": backup_id} if backup_id else {}
    return SimpleNamespace(
        extra=extra,
        timestamp=T0 + timedelta(minutes=minutes),
        source_dag_id="backup__shop",
        source_run_id=run_id,
    )


def choose(requested: str | None = None, events: list | None = None, backups=BACKUPS):
    return choose_backup(
        backups,
        database="shop",
        where="file:///b",
        requested=requested,
        announcement=announced_backup(events or []),
    )


def test_a_drill_started_by_a_backup_restores_that_backup_not_the_newest():
    choice = choose(events=[event(OLD, 1, "scheduled__2026-03-01")])
    assert choice.backup.id == OLD
    assert choice.reason.startswith(
        "announced by the asset event of backup__shop / scheduled__2026-03-01 at "
    )


def test_of_several_events_the_newest_names_the_backup_whatever_their_order():
    events = [event(MIDDLE, 30), event(OLD, 10), event(NEW, 5)]
    assert choose(events=events).backup.id == MIDDLE


def test_without_events_or_param_the_newest_verified_backup_is_restored():
    choice = choose()
    assert (choice.backup.id, choice.reason) == (NEW, "newest verified")
    assert announced_backup([]) is None


def test_the_backup_id_param_wins_over_the_event():
    choice = choose(requested=f"  {MIDDLE} ", events=[event(OLD, 1)])
    assert (choice.backup.id, choice.reason) == (MIDDLE, "the run's backup_id param")
    assert choose(requested="   ", events=[event(OLD, 1)]).backup.id == OLD  # blank param: no param


@pytest.mark.parametrize(
    ("named", "problem"),
    [
        ("20990101T000000Z-ffffff", "does not exist at file:///b"),
        (BAD, "is bad, not verified"),
    ],
)
def test_an_event_naming_a_missing_or_unverified_backup_is_refused_not_replaced(named, problem):
    with pytest.raises(DrillError) as refused:
        choose(events=[event(named, 1, "scheduled__2026-03-03")])
    message = str(refused.value)
    assert message.startswith(f"backup {named} of shop, announced by the asset event of backup__shop / ")
    assert "scheduled__2026-03-03" in message and message.endswith(problem)


@pytest.mark.parametrize(
    ("named", "problem"),
    [("20990101T000000Z-ffffff", "does not exist at file:///b"), (BAD, "is bad, not verified")],
)
def test_a_param_naming_a_missing_or_unverified_backup_is_refused(named, problem):
    with pytest.raises(DrillError, match=rf"^backup {named} of shop {problem}$"):
        choose(requested=named)


def test_an_event_without_a_backup_id_falls_back_to_the_newest_verified_and_says_so():
    choice = choose(events=[event(None, 1)])
    assert choice.backup.id == NEW
    assert choice.reason.startswith("newest verified (the asset event of backup__shop / scheduled__x at ")
    assert choice.reason.endswith(" names no backup)")


def test_no_verified_backup_at_all_is_refused():
    with pytest.raises(DrillError, match=r"^no verified backup of shop at file:///b$"):
        choose(backups=[StoredBackup(BAD, "bad", T0), StoredBackup(NEW, "partial", T0)])
    with pytest.raises(DrillError, match="no verified backup"):
        choose(events=[event(None, 1)], backups=[])


def test_an_announcement_says_where_it_came_from():
    bare = SimpleNamespace(extra={"backup_id": OLD}, timestamp=T0)
    assert announced_backup([bare]) == BackupAnnouncement(OLD, T0, "an asset event")
    assert BackupAnnouncement(OLD).describe() == "an asset event"
    assert announced_backup([SimpleNamespace(extra=None, timestamp=T0)]).backup_id is None

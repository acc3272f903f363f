"""Retention's decisions in words: which bucket keeps a backup, across year boundaries and time
zones, when a run in progress counts as abandoned, and what the dry run says about each backup."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from opsdag.backups.retention import BackupRecord, RetentionPolicy, plan_retention


def day(text: str, hour: int = 2) -> datetime:
    """``"2026-12-31"`` at 02:00 UTC, when the nightly backup runs."""
    return datetime.fromisoformat(text).replace(hour=hour, tzinfo=UTC)


def nightly(*days: str) -> list[BackupRecord]:
    """Verified backups named after their day."""
    return [BackupRecord(d, day(d)) for d in days]


# -- weeks and months across a year boundary ----------------------------------------------------

BOUNDARY_CASES = [
    # (id, backups, policy (keep_last, daily, weekly, monthly), the dry run)
    (
        "ISO week 53 of 2026 runs into January 2027",
        # Mon 28 Dec 2026 .. Sun 3 Jan 2027 is 2026-W53; Mon 4 Jan 2027 starts 2027-W01.
        nightly("2026-12-27", "2026-12-30", "2026-12-31", "2027-01-01", "2027-01-03", "2027-01-04"),
        (1, 0, 3, 3),
        [
            "keep   2027-01-04: newest verified, last 1, weekly 2027-W01, monthly 2027-01",
            "keep   2027-01-03: weekly 2026-W53",
            "keep   2026-12-31: monthly 2026-12",
            "keep   2026-12-27: weekly 2026-W52",
            "delete 2027-01-01: not selected by any keep rule",
            "delete 2026-12-30: not selected by any keep rule",
        ],
    ),
    (
        "Monday 30 Dec 2024 is in ISO week 1 of 2025 but in December's month",
        nightly("2024-12-29", "2024-12-30", "2025-01-02"),
        (1, 0, 2, 2),
        [
            "keep   2025-01-02: newest verified, last 1, weekly 2025-W01, monthly 2025-01",
            "keep   2024-12-30: monthly 2024-12",
            "keep   2024-12-29: weekly 2024-W52",
        ],
    ),
    (
        "daily buckets are named by their date, the newest of each day kept",
        [
            *nightly("2026-12-31"),
            BackupRecord("2026-12-31 late", day("2026-12-31", 23)),
            *nightly("2027-01-01"),
        ],
        (1, 2, 0, 0),
        [
            "keep   2027-01-01: newest verified, last 1, daily 2027-01-01",
            "keep   2026-12-31 late: daily 2026-12-31",
            "delete 2026-12-31: not selected by any keep rule",
        ],
    ),
]


@pytest.mark.parametrize(
    ("records", "numbers", "dry_run"),
    [case[1:] for case in BOUNDARY_CASES],
    ids=[case[0] for case in BOUNDARY_CASES],
)
def test_buckets_across_a_year_boundary(records, numbers, dry_run) -> None:
    plan = plan_retention(records, RetentionPolicy(*numbers), now=day("2027-02-01"))
    assert plan.describe() == dry_run


# -- days are UTC days, whatever the zone of the timestamps or of the machine -------------------


@pytest.fixture
def machine_ten_hours_behind_utc(monkeypatch):
    """The process's local time zone is UTC-10 (POSIX ``TZ``: no zone database needed)."""
    monkeypatch.setenv("TZ", "HST+10")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_backup_belongs_to_its_utc_day(machine_ten_hours_behind_utc) -> None:
    new_york = timezone(timedelta(hours=-4))
    records = [
        # 23:30 in New York on 5 May is 03:30 UTC on 6 May (and 17:30 on 5 May on this machine).
        BackupRecord("evening", datetime(2026, 5, 5, 23, 30, tzinfo=new_york)),
        BackupRecord("morning", datetime(2026, 5, 5, 8, 0, tzinfo=UTC)),
    ]
    plan = plan_retention(records, RetentionPolicy(1, 2, 0, 0), now=datetime(2026, 5, 6, 12, tzinfo=UTC))
    assert plan.keep == {
        "evening": ["newest verified", "last 1", "daily 2026-05-06"],
        "morning": ["daily 2026-05-05"],
    }


def test_naive_times_are_refused() -> None:
    naive = datetime(2026, 1, 1, 2)
    message = r"^datetime\.datetime\(2026, 1, 1, 2, 0\) has no time zone: retention needs aware datetimes$"
    with pytest.raises(ValueError, match=message):
        plan_retention(nightly("2026-01-01"), RetentionPolicy(), now=naive)
    with pytest.raises(ValueError, match=message):
        plan_retention([BackupRecord("x", naive)], RetentionPolicy(), now=day("2026-01-02"))


# -- runs in progress: kept while younger than the grace period ---------------------------------

NOW = day("2026-05-05", 12)
GRACE = timedelta(hours=6)

GRACE_CASES = [
    # (id, state, age, decision, reason)
    ("partial, just started", "partial", timedelta(minutes=1), "keep", "in progress"),
    ("partial, a second short of the grace", "partial", GRACE - timedelta(seconds=1), "keep", "in progress"),
    (
        "partial, exactly the grace",
        "partial",
        GRACE,
        "delete",
        "partial for longer than 6:00:00 (abandoned run)",
    ),
    (
        "unverified, a day old",
        "unverified",
        timedelta(days=1),
        "delete",
        "unverified for longer than 6:00:00 (abandoned run)",
    ),
    ("unverified, an hour old", "unverified", timedelta(hours=1), "keep", "in progress"),
    ("bad, a minute old", "bad", timedelta(minutes=1), "delete", "failed verification"),
    (
        "verified, but too old for any rule",
        "verified",
        timedelta(days=30),
        "delete",
        "not selected by any keep rule",
    ),
]


@pytest.mark.parametrize(
    ("state", "age", "decision", "reason"),
    [case[1:] for case in GRACE_CASES],
    ids=[case[0] for case in GRACE_CASES],
)
def test_what_happens_to_a_backup_that_is_not_the_newest(state, age, decision, reason) -> None:
    records = [BackupRecord("newest", NOW - timedelta(hours=1)), BackupRecord("other", NOW - age, state)]
    plan = plan_retention(records, RetentionPolicy(1, 0, 0, 0, grace=GRACE), now=NOW)
    if decision == "keep":
        assert (plan.keep["other"], plan.delete) == ([reason], {})
    else:
        assert (list(plan.keep), plan.delete) == (["newest"], {"other": reason})


def test_the_dry_run_lists_every_reason_then_every_deletion() -> None:
    records = [
        *nightly("2026-05-03", "2026-05-04"),
        BackupRecord("2026-05-05", day("2026-05-05"), "bad"),
        BackupRecord("2026-05-05 retry", day("2026-05-05", 11), "partial"),
    ]
    plan = plan_retention(records, RetentionPolicy(2, 1, 1, 0), now=NOW)
    assert plan.describe() == [
        "keep   2026-05-05 retry: in progress",
        "keep   2026-05-04: newest verified, last 2, daily 2026-05-04, weekly 2026-W19",
        "keep   2026-05-03: last 2",
        "delete 2026-05-05: failed verification",
    ]
    assert plan.to_dict() == {
        "keep": {
            "2026-05-05 retry": ["in progress"],
            "2026-05-04": ["newest verified", "last 2", "daily 2026-05-04", "weekly 2026-W19"],
            "2026-05-03": ["last 2"],
        },
        "delete": {"2026-05-05": "failed verification"},
    }


# -- the policy's own checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("numbers", "message"),
    [
        ({"keep_last": 0}, "keep_last must be at least 1: the newest verified backup is always kept"),
        ({"daily": -1}, "daily must not be negative"),
        ({"weekly": -1}, "weekly must not be negative"),
        ({"monthly": -1}, "monthly must not be negative"),
    ],
)
def test_a_policy_that_cannot_hold_is_refused(numbers, message) -> None:
    with pytest.raises(ValueError) as refused:
        RetentionPolicy(**numbers)
    assert str(refused.value) == message


def test_zero_buckets_keep_only_the_newest() -> None:
    policy = RetentionPolicy(keep_last=1, daily=0, weekly=0, monthly=0)
    plan = plan_retention(nightly("2026-05-03", "2026-05-04"), policy, now=NOW)
    assert plan.describe() == [
        "keep   2026-05-04: newest verified, last 1",
        "delete 2026-05-03: not selected by any keep rule",
    ]


def test_the_default_policy_is_that_of_a_database_spec_without_retention() -> None:
    from opsdag.spec.database import Retention

    assert RetentionPolicy() == RetentionPolicy(**Retention().model_dump())


@pytest.mark.parametrize(
    ("age", "kept"),
    [(timedelta(hours=23, minutes=59), True), (timedelta(hours=24), False)],
    ids=["a minute short of a day", "a day"],
)
def test_by_default_a_run_in_progress_is_given_a_day(age, kept) -> None:
    records = [BackupRecord("newest", NOW - timedelta(hours=1)), BackupRecord("other", NOW - age, "partial")]
    plan = plan_retention(records, RetentionPolicy(), now=NOW)
    if kept:
        assert plan.keep["other"] == ["in progress"]
    else:
        assert plan.delete == {"other": "partial for longer than 1 day, 0:00:00 (abandoned run)"}

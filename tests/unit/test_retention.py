"""Retention policy across a simulated calendar (pure function, no Airflow, no server)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from opsdag.backups.retention import BackupRecord, RetentionPolicy, plan_retention


def at(day: date, hour: int = 2) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def bid(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


def simulate(days: list[date], policy: RetentionPolicy) -> list[str]:
    """One backup a day at 02:00, retention applied right after each one, as the DAG does."""
    stored: list[BackupRecord] = []
    for day in days:
        moment = at(day)
        stored.append(BackupRecord(bid(moment), moment, "verified"))
        plan = plan_retention(stored, policy, now=moment + timedelta(minutes=5))
        assert set(plan.keep) | set(plan.delete) == {r.id for r in stored}
        assert bid(moment) in plan.keep, "the backup just taken is the newest verified one"
        stored = [r for r in stored if r.id not in plan.delete]
    return sorted((r.id for r in stored), reverse=True)


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def ids(*days: date) -> list[str]:
    return sorted((bid(at(d)) for d in days), reverse=True)


def test_a_year_of_daily_backups_keeps_exactly_the_policy():
    kept = simulate(days_between(date(2026, 1, 1), date(2026, 12, 31)), RetentionPolicy(3, 7, 4, 6))
    # 2026-12-31 is a Thursday: ISO week 53 runs Mon 28 Dec .. Sun 3 Jan.
    daily = [date(2026, 12, d) for d in range(25, 32)]
    weekly = [date(2026, 12, 31), date(2026, 12, 27), date(2026, 12, 20), date(2026, 12, 13)]
    monthly = [date(2026, 12, 31), date(2026, 11, 30), date(2026, 10, 31), date(2026, 9, 30)]
    monthly += [date(2026, 8, 31), date(2026, 7, 31)]
    assert kept == ids(*set(daily + weekly + monthly))
    assert len(kept) == 14


def test_stateless_plan_matches_the_daily_simulation():
    policy = RetentionPolicy(2, 3, 2, 3)
    days = days_between(date(2026, 3, 1), date(2026, 6, 10))
    kept = simulate(days, policy)
    everything = [BackupRecord(bid(at(d)), at(d)) for d in days]
    plan = plan_retention(everything, policy, now=at(days[-1], 3))
    assert sorted(plan.keep, reverse=True) == kept


def test_a_gap_in_backups_does_not_prune_the_history():
    """Backups stop for 20 days: the last 7 days *with* a backup stay, not an empty window."""
    days = days_between(date(2026, 1, 1), date(2026, 2, 10))
    policy = RetentionPolicy(1, 7, 0, 0)
    kept = simulate(days, policy)
    assert kept == ids(*days[-7:])
    later = [BackupRecord(i, datetime.strptime(i, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)) for i in kept]
    plan = plan_retention(later, policy, now=at(date(2026, 3, 2)))
    assert plan.delete == {}


def test_several_backups_a_day_keep_the_newest_of_each_day():
    day = date(2026, 5, 5)
    records = [BackupRecord(f"b{h:02d}", at(day, h)) for h in range(0, 24, 6)]
    records.append(BackupRecord("prev", at(day - timedelta(days=1), 23)))
    plan = plan_retention(records, RetentionPolicy(1, 2, 0, 0), now=at(day, 23))
    assert list(plan.keep) == ["b18", "prev"]
    assert plan.keep["b18"] == ["newest verified", "last 1", "daily 2026-05-05"]
    assert set(plan.delete) == {"b00", "b06", "b12"}


def test_never_the_newest_verified_even_when_newer_ones_are_bad():
    day = date(2026, 5, 5)
    records = [
        BackupRecord("good-old", at(day - timedelta(days=40)), "verified"),
        BackupRecord("bad-1", at(day - timedelta(days=2)), "bad"),
        BackupRecord("bad-2", at(day - timedelta(days=1)), "bad"),
    ]
    plan = plan_retention(records, RetentionPolicy(1, 0, 0, 0), now=at(day))
    assert "good-old" in plan.keep and "newest verified" in plan.keep["good-old"]
    assert plan.delete == {"bad-2": "failed verification", "bad-1": "failed verification"}


def test_backups_in_progress_are_kept_until_the_grace_period_ends():
    now = at(date(2026, 5, 5), 12)
    records = [
        BackupRecord("done", now - timedelta(hours=1), "verified"),
        BackupRecord("running", now - timedelta(minutes=3), "partial"),
        BackupRecord("manifest-only", now - timedelta(hours=2), "unverified"),
        BackupRecord("dead", now - timedelta(days=3), "partial"),
        BackupRecord("dead-unverified", now - timedelta(days=2), "unverified"),
    ]
    plan = plan_retention(records, RetentionPolicy(1, 0, 0, 0), now=now)
    assert plan.keep["running"] == ["in progress"]
    assert plan.keep["manifest-only"] == ["in progress"]
    assert set(plan.delete) == {"dead", "dead-unverified"}
    assert "abandoned" in plan.delete["dead"]
    assert plan.describe()[0].startswith("keep   running: in progress")


def test_an_empty_store_and_bad_arguments():
    assert plan_retention([], RetentionPolicy(), now=datetime.now(UTC)).to_dict() == {
        "keep": {},
        "delete": {},
    }
    with pytest.raises(ValueError, match="keep_last"):
        RetentionPolicy(keep_last=0)
    with pytest.raises(ValueError, match="time zone"):
        plan_retention([BackupRecord("x", datetime(2026, 1, 1))], RetentionPolicy(), now=datetime.now(UTC))

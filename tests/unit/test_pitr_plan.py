"""The pure decisions of point-in-time drills: the target, the base backup, the range, the marker proof."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from opsdag.backups.pitr_plan import (
    RestorableRange,
    TargetRefused,
    check_in_range,
    choose_base,
    marker_verdict,
    parse_target,
)

T0 = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)


@dataclass
class Manifest:
    consistent_at: datetime
    method: str = "physical"


@dataclass
class Backup:
    id: str
    manifest: Manifest
    state: str = "verified"


def backups() -> list[Backup]:
    return [
        Backup("b1", Manifest(T0)),
        Backup("logical", Manifest(T0 + timedelta(minutes=30), method="logical")),
        Backup("b2", Manifest(T0 + timedelta(hours=1))),
        Backup("bad", Manifest(T0 + timedelta(hours=1, minutes=30)), state="bad"),
        Backup("b3", Manifest(T0 + timedelta(hours=2))),
    ]


@pytest.mark.parametrize("text", [None, "", "latest", " LATEST "])
def test_latest_is_the_default(text):
    assert parse_target(text).latest


def test_a_time_with_its_zone_is_kept_in_utc():
    assert parse_target("2026-11-30T03:00:00+01:00").time == T0
    assert parse_target("2026-11-30 02:00:00Z").time == T0


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("2026-11-30T02:00:00", "has no time zone"),
        ("yesterday", "is not a time"),
        ("2026-13-01T00:00Z", "not a time"),
    ],
)
def test_bad_targets_are_refused_naming_the_field(text, problem):
    with pytest.raises(TargetRefused, match=f"recovery_target_time .*{problem}"):
        parse_target(text)


def test_the_base_is_the_newest_verified_physical_backup_before_the_target():
    chosen = choose_base(backups(), parse_target("2026-11-30T03:45:00Z"), database="db")
    assert chosen.id == "b2"  # not the logical one, not the bad one, not b3 (after the target)
    assert choose_base(backups(), parse_target("latest"), database="db").id == "b3"


def test_a_requested_base_after_the_target_is_refused():
    with pytest.raises(TargetRefused, match="can only be rolled forward"):
        choose_base(backups(), parse_target("2026-11-30T02:30:00Z"), database="db", requested="b2")
    with pytest.raises(TargetRefused, match="not a verified physical backup"):
        choose_base(backups(), parse_target("latest"), database="db", requested="bad")


def test_a_target_outside_the_range_is_refused_naming_it():
    span = RestorableRange(T0, T0 + timedelta(hours=3))
    check_in_range(parse_target("2026-11-30T04:00:00Z"), span, "db")
    with pytest.raises(
        TargetRefused, match=r"before the oldest .* from 2026-11-30T02:00:00\+00:00 to 2026-11-30T05"
    ):
        check_in_range(parse_target("2026-11-30T01:59:59Z"), span, "db")
    with pytest.raises(TargetRefused, match="after the newest transaction archived"):
        check_in_range(parse_target("2026-11-30T05:00:01Z"), span, "db")
    with pytest.raises(TargetRefused, match="end of the archive"):
        check_in_range(parse_target("2026-11-30T04:00:00Z"), RestorableRange(T0, None), "db")


def test_the_marker_proof_wants_exactly_the_rows_up_to_the_target():
    written = {"rows": 3, "newest": "2026-11-30T02:00:10+00:00"}
    assert marker_verdict(written, {**written, "after_target": 0}, "t")["ok"]
    assert not marker_verdict(written, {"rows": 2, "newest": "x", "after_target": 0}, "t")["ok"]
    late = marker_verdict(written, {**written, "after_target": 1}, "t")
    assert not late["ok"] and "written after t came back" in late["problems"][0]

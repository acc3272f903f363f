"""WAL names and the continuity verdict: tables of archives, the verdict a person would read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from opsdag.backups.wal_continuity import ArchivedSegment, check_continuity
from opsdag.backups.wal_names import (
    Segment,
    WalNameError,
    is_archivable,
    parse_lsn,
    parse_segment,
    segment_of,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
MIB = 1024 * 1024


def seg(number: int, timeline: int = 1, size: int = 16 * MIB) -> str:
    return Segment(timeline, number, size).name


def archive(*numbers: int, timeline: int = 1, age_s: float = 30, bad: dict[int, str] | None = None):
    """Segments archived one second apart, the newest ``age_s`` before NOW."""
    bad = bad or {}
    newest = max(numbers)
    return [
        ArchivedSegment(seg(n, timeline), NOW - timedelta(seconds=age_s + newest - n), bad.get(n, "ok"))
        for n in numbers
    ]


def test_segment_names_follow_postgresql():
    assert seg(2) == "000000010000000000000002"
    assert seg(0xFF) == "0000000100000000000000FF"
    assert seg(0x100) == "000000010000000100000000"  # 16 MiB: 256 segments per log id
    assert seg(0x3F, size=64 * MIB) == "00000001000000000000003F"  # 64 MiB: 64 per log id
    assert seg(0x40, size=64 * MIB) == "000000010000000100000000"
    assert seg(5, timeline=0x1A) == "0000001A0000000000000005"
    assert parse_segment("000000010000000100000000").number == 0x100
    assert parse_segment("000000030000000A00000010") == Segment(3, 0xA * 0x100 + 0x10)
    assert parse_lsn("0/2000028") == 0x2000028 and parse_lsn("1/0") == 1 << 32
    assert segment_of("0/2000028", 1).name == "000000010000000000000002"
    assert segment_of("1/FF000000", 2).name == "0000000200000001000000FF"


@pytest.mark.parametrize(
    "name, archivable",
    [
        ("000000010000000000000002", True),
        ("00000002.history", True),
        ("000000010000000000000002.00000028.backup", True),
        ("000000010000000000000002.partial", True),
        ("000000010000000000000002.sha256", False),
        ("../000000010000000000000002", False),
        ("00000001000000000000000g", False),
        ("postgresql.conf", False),
    ],
)
def test_only_names_postgresql_archives_are_accepted(name, archivable):
    assert is_archivable(name) is archivable


def test_bad_names_and_positions_say_what_they_should_look_like():
    with pytest.raises(WalNameError, match="24 hex digits"):
        parse_segment("0000000100000000000002")
    with pytest.raises(WalNameError, match="cannot exist with 16777216-byte segments"):
        parse_segment("000000010000000000000100")
    with pytest.raises(WalNameError, match="not an LSN"):
        parse_lsn("2000028")


def test_a_continuous_archive_gives_the_newest_point_and_the_rpo():
    verdict = check_continuity(Segment(1, 5), archive(3, 4, 5, 6, 7, age_s=42), now=NOW, end=Segment(1, 5))
    assert verdict.ok and verdict.status == "ok"
    assert verdict.newest_segment == seg(7) and verdict.segments == 3  # 5, 6, 7: older ones not needed
    assert verdict.newest_at == NOW - timedelta(seconds=42) and verdict.rpo_seconds == 42
    assert verdict.reason.startswith(f"WAL continuous from {seg(5)} to {seg(7)} (3 segment(s))")
    assert "RPO now 42 s" in verdict.reason
    assert verdict.to_dict()["newest_at"] == "2026-11-29T11:59:18+00:00"


def test_a_gap_names_the_first_missing_segment():
    verdict = check_continuity(Segment(1, 5), archive(5, 6, 8, 9, 11), now=NOW)
    assert verdict.status == "gap" and not verdict.ok
    assert verdict.first_missing == seg(7)
    assert verdict.reason.startswith(f"WAL gap: {seg(7)} is missing from the archive")
    assert f"holds {seg(5)} to {seg(6)} before it" in verdict.reason
    assert f"4 newer segment(s) up to {seg(11)}" in verdict.reason
    assert verdict.newest_segment == seg(11) and verdict.segments == 2
    # the recovery point is the end of the unbroken chain, not the newest file
    assert verdict.newest_at == archive(5, 6, 8, 9, 11)[1].archived_at


def test_a_missing_start_segment_is_a_gap_too():
    verdict = check_continuity(Segment(1, 5), archive(6, 7), now=NOW)
    assert verdict.status == "gap" and verdict.first_missing == seg(5)
    assert "holds nothing before it" in verdict.reason


def test_the_chain_crosses_a_log_id_boundary():
    verdict = check_continuity(Segment(1, 0xFE), archive(0xFE, 0xFF, 0x100, 0x101), now=NOW)
    assert verdict.ok and verdict.newest_segment == "000000010000000100000001"
    gap = check_continuity(Segment(1, 0xFE), archive(0xFE, 0xFF, 0x101), now=NOW)
    assert gap.first_missing == "000000010000000100000000"


def test_a_segment_whose_bytes_changed_fails_and_is_named():
    verdict = check_continuity(Segment(1, 5), archive(5, 6, 7, bad={6: "mismatch", 7: "missing"}), now=NOW)
    assert verdict.status == "corrupt"
    assert verdict.corrupt == [
        f"{seg(6)}: sha256 differs from the one stored at archiving (the bytes changed)",
        f"{seg(7)}: no .sha256 stored next to it",
    ]
    assert verdict.reason.startswith("WAL archive damaged: 2 segment(s)")
    # a damaged segment older than the base backup does not matter
    assert check_continuity(Segment(1, 5), archive(4, 5, 6, bad={4: "mismatch"}), now=NOW).ok


def test_waiting_until_the_backups_end_segment_is_archived():
    verdict = check_continuity(Segment(1, 5), archive(5), now=NOW, end=Segment(1, 6))
    assert verdict.status == "waiting" and f"not yet the base backup's end segment {seg(6)}" in verdict.reason
    empty = check_continuity(Segment(1, 5), archive(2, 3), now=NOW)
    assert empty.status == "waiting" and "no segment archived yet" in empty.reason


def test_a_newer_timeline_continues_the_chain():
    archived = archive(5, 6) + archive(7, 8, timeline=2)
    verdict = check_continuity(Segment(1, 5), archived, now=NOW)
    assert verdict.ok and verdict.newest_segment == seg(8, timeline=2)
    assert check_continuity(Segment(2, 7), archive(5, 6, 7), now=NOW).status == "waiting"


def test_other_archived_files_are_not_segments_of_the_chain():
    archived = [
        *archive(5, 6),
        ArchivedSegment("00000002.history", NOW),
        ArchivedSegment(f"{seg(5)}.00000028.backup", NOW),
    ]
    assert check_continuity(Segment(1, 5), archived, now=NOW).segments == 2

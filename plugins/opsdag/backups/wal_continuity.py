"""Is the WAL archive usable for point-in-time recovery from a base backup? A pure decision.

``check_continuity(start, archived, now=...)`` looks only at its arguments: the base
backup's start segment (recovery needs every segment from it on), the archived files with
their times and checksum results, and optionally the backup's end segment (the archive
must reach at least that far before the backup is recoverable to any later point).

Outcomes, worst first:

- ``gap``: a segment between the start and the newest archived one is missing. Recovery
  from this base backup stops before it; the first missing name is given.
- ``corrupt``: a segment of the chain does not match the sha256 stored next to it (or has
  none): its bytes changed after archiving.
- ``waiting``: no gap, but the archive does not yet hold the backup's end segment (the
  archiver runs behind the backup; the caller decides how long to wait).
- ``ok``: continuous from the start to the newest archived segment, whose time is the
  recovery point, and ``now`` minus it the current RPO.

Several timelines are merged by segment number (the highest timeline wins), which is what
a recovery following ``recovery_target_timeline = latest`` reads; history files are not
followed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from opsdag.backups.wal_names import DEFAULT_SEGMENT_SIZE, Segment, is_segment, parse_segment
from opsdag.format import duration

Checksum = Literal["ok", "mismatch", "missing"]
Status = Literal["ok", "waiting", "gap", "corrupt"]


@dataclass(frozen=True)
class ArchivedSegment:
    """One archived file as the check sees it: its name, when it was archived, its checksum result."""

    name: str
    archived_at: datetime
    checksum: Checksum = "ok"


@dataclass
class WalContinuity:
    """The verdict, with every figure the report and the Asset event carry."""

    status: Status
    reason: str
    start_segment: str
    end_segment: str | None = None
    newest_segment: str | None = None
    newest_at: datetime | None = None
    segments: int = 0
    first_missing: str | None = None
    corrupt: list[str] = field(default_factory=list)
    rpo_seconds: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "start_segment": self.start_segment,
            "end_segment": self.end_segment,
            "newest_segment": self.newest_segment,
            "newest_at": self.newest_at.isoformat() if self.newest_at else None,
            "segments": self.segments,
            "first_missing": self.first_missing,
            "corrupt": list(self.corrupt),
            "rpo_seconds": None if self.rpo_seconds is None else round(self.rpo_seconds, 3),
        }


def check_continuity(
    start: Segment,
    archived: list[ArchivedSegment],
    *,
    now: datetime,
    end: Segment | None = None,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> WalContinuity:
    """Decide whether the archive holds every segment from ``start`` to its newest one."""
    by_number: dict[int, tuple[Segment, ArchivedSegment]] = {}
    for entry in archived:
        if not is_segment(entry.name):
            continue
        segment = parse_segment(entry.name, segment_size)
        if segment.timeline < start.timeline or segment.number < start.number:
            continue
        held = by_number.get(segment.number)
        if held is None or segment.timeline > held[0].timeline:
            by_number[segment.number] = (segment, entry)
    verdict = WalContinuity(
        status="ok", reason="", start_segment=start.name, end_segment=end.name if end else None
    )
    if not by_number:
        verdict.status = "waiting"
        verdict.reason = f"no segment archived yet from the base backup's start segment {start.name} on"
        return verdict

    # The contiguous chain from the start, then whatever lies beyond a gap.
    chain: list[tuple[Segment, ArchivedSegment]] = []
    number = start.number
    while number in by_number:
        chain.append(by_number[number])
        number += 1
    highest = max(by_number)
    newest_segment, newest_entry = by_number[highest]
    verdict.newest_segment = newest_segment.name
    verdict.segments = len(chain)
    verdict.corrupt = [f"{e.name}: {_checksum_problem(e.checksum)}" for _, e in chain if e.checksum != "ok"]
    if chain:
        last_entry = chain[-1][1]
        verdict.newest_at = last_entry.archived_at
        verdict.rpo_seconds = max(0.0, (now - last_entry.archived_at).total_seconds())

    if number <= highest:
        timeline = chain[-1][0].timeline if chain else start.timeline
        missing = Segment(timeline, number, segment_size).name
        verdict.status = "gap"
        verdict.first_missing = missing
        held = (
            f"holds {chain[0][0].name} to {chain[-1][0].name} before it"
            if chain
            else "holds nothing before it"
        )
        verdict.reason = (
            f"WAL gap: {missing} is missing from the archive (it {held}, and "
            f"{highest - number} newer segment(s) up to {newest_segment.name} after it): point-in-time "
            f"recovery from the base backup starting at {start.name} stops before {missing}"
        )
        return verdict
    if verdict.corrupt:
        verdict.status = "corrupt"
        verdict.reason = (
            f"WAL archive damaged: {len(verdict.corrupt)} segment(s) of the chain from {start.name} "
            f"fail their sha256: {'; '.join(verdict.corrupt[:5])}"
        )
        return verdict
    if end is not None and highest < end.number:
        verdict.status = "waiting"
        verdict.reason = (
            f"the archive reaches {newest_segment.name}, not yet the base backup's end segment {end.name}"
        )
        return verdict
    verdict.reason = (
        f"WAL continuous from {start.name} to {newest_segment.name} ({len(chain)} segment(s)); "
        f"newest archived at {newest_entry.archived_at.isoformat(timespec='seconds')}, "
        f"RPO now {duration(verdict.rpo_seconds)}"
    )
    return verdict


def _checksum_problem(checksum: Checksum) -> str:
    if checksum == "mismatch":
        return "sha256 differs from the one stored at archiving (the bytes changed)"
    return "no .sha256 stored next to it"

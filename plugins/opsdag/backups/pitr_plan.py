"""Point-in-time recovery in a drill: the target, the base backup, the range the archive covers.

Pure decisions (no I/O): ``pitr`` gathers their inputs and acts on them.

A drill recovers to ``recovery_target_time``: an ISO 8601 time with its zone, or
``latest`` (every transaction the WAL archive holds). It restores the newest verified
physical base backup consistent at or before the target and replays the archived WAL
from it. What the storage can restore is a range: from the consistency point of the
oldest verified base backup to the newest transaction committed in the archive (the
last ``COMMIT`` record of its newest segment; PostgreSQL 15 stops with "recovery ended
before configured recovery target was reached" when no commit after the target has
been archived yet, so a target beyond it is refused up front rather than failing there).
A target outside the range is refused before anything is restored, naming the range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

LATEST = "latest"
FIELD = "recovery_target_time"


class TargetRefused(ValueError):
    """The run's recovery target cannot be restored; nothing was changed."""


@dataclass(frozen=True)
class RecoveryTarget:
    """``time`` None means ``latest``: replay everything archived."""

    time: datetime | None = None

    @property
    def latest(self) -> bool:
        return self.time is None

    def describe(self) -> str:
        return LATEST if self.time is None else self.time.isoformat()


def parse_target(value: str | None) -> RecoveryTarget:
    """``latest`` (or nothing) or an ISO 8601 time with a zone (``2026-11-30T02:00:00Z``)."""
    text = (value or "").strip()
    if not text or text.lower() == LATEST:
        return RecoveryTarget()
    try:
        moment = datetime.fromisoformat(text.replace(" ", "T", 1) if "T" not in text else text)
    except ValueError:
        raise TargetRefused(
            f"{FIELD} {text!r} is not a time: give 'latest' or an ISO 8601 time with its zone, "
            "e.g. 2026-11-30T02:15:00Z"
        ) from None
    if moment.tzinfo is None:
        raise TargetRefused(
            f"{FIELD} {text!r} has no time zone: add one (e.g. {text}Z for UTC), the drill "
            "will not guess which zone you meant"
        )
    return RecoveryTarget(moment.astimezone(UTC))


@dataclass(frozen=True)
class RestorableRange:
    earliest: datetime
    latest: datetime | None  # None: no commit found in the archive's newest segments

    def describe(self) -> str:
        end = self.latest.isoformat() if self.latest else "the end of the archive (no commit found in it)"
        return f"from {self.earliest.isoformat()} to {end}"


def restorable_range(bases: Sequence[Any], last_commit: datetime | None) -> RestorableRange | None:
    """The range over verified base backups (``.manifest.consistent_at``); None without any."""
    if not bases:
        return None
    return RestorableRange(min(b.manifest.consistent_at for b in bases), last_commit)


def pitr_bases(backups: Sequence[Any]) -> list[Any]:
    """Verified physical backups, oldest first: the bases archived WAL replays onto."""
    return [b for b in backups if b.state == "verified" and b.manifest and b.manifest.method == "physical"]


def choose_base(
    backups: Sequence[Any], target: RecoveryTarget, *, database: str, requested: str | None = None
) -> Any:
    """The base backup for ``target``: the requested one (it must precede the target), else the
    newest verified physical backup consistent at or before it (the least WAL to replay)."""
    bases = pitr_bases(backups)
    if not bases:
        raise TargetRefused(f"no verified physical base backup of {database}: nothing to recover from")
    if requested:
        named = next((b for b in bases if b.id == requested), None)
        if named is None:
            raise TargetRefused(f"backup {requested} of {database} is not a verified physical backup")
        if target.time is not None and named.manifest.consistent_at > target.time:
            raise TargetRefused(
                f"backup {requested} is consistent at {named.manifest.consistent_at.isoformat()}, after "
                f"{FIELD} {target.describe()}: a base backup can only be rolled forward"
            )
        return named
    if target.time is None:
        return bases[-1]
    before = [b for b in bases if b.manifest.consistent_at <= target.time]
    if not before:
        span = restorable_range(bases, None)
        assert span is not None
        raise TargetRefused(
            f"{FIELD} {target.describe()} is before the oldest verified base backup of {database} "
            f"(consistent at {span.earliest.isoformat()}): it can restore from then on, not earlier"
        )
    return before[-1]


def check_in_range(target: RecoveryTarget, span: RestorableRange, database: str) -> None:
    """Refuse a target the archive does not reach, naming what it can restore."""
    if target.time is None:
        return
    if target.time < span.earliest:
        raise TargetRefused(
            f"{FIELD} {target.describe()} is before the oldest verified base backup of {database}: "
            f"its backups can restore {span.describe()}"
        )
    if span.latest is None or target.time > span.latest:
        raise TargetRefused(
            f"{FIELD} {target.describe()} is after the newest transaction archived for {database}: "
            f"its backups can restore {span.describe()}"
        )


def marker_verdict(source: dict[str, Any], restored: dict[str, Any], bound: str) -> dict[str, Any]:
    """Do the restored marker rows equal the source's rows written up to ``bound``?

    ``source``/``restored``: ``{"rows": int, "newest": iso or None}``; ``restored`` also
    ``"after_target"``: rows newer than the target (must be 0).
    """
    problems = []
    if restored.get("after_target"):
        problems.append(f"{restored['after_target']} marker row(s) written after {bound} came back")
    if restored["rows"] != source["rows"]:
        problems.append(f"{restored['rows']} marker rows restored, {source['rows']} written up to {bound}")
    elif restored.get("newest") != source.get("newest"):
        problems.append(f"newest marker restored {restored.get('newest')}, written {source.get('newest')}")
    return {"ok": not problems, "source": source, "restored": restored, "bound": bound, "problems": problems}

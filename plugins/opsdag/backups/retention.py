"""The retention policy: which backups to keep and which to prune, as a pure function.

``plan_retention(records, policy, now)`` looks only at its arguments, so it can be
tested across a simulated calendar and shown as a dry run before anything is deleted.

Rules, in order:

- Only *verified* backups count towards the keep rules: ``keep_last`` newest, plus the
  newest of each of the last ``daily`` days, ``weekly`` ISO weeks and ``monthly`` months
  that have a verified backup (restic's "keep-daily" reading, not a window counted back
  from ``now``): if backups stop for a month, pruning does not eat the history they left.
  Day, week and month are taken in UTC.
- The newest verified backup is never pruned, whatever the numbers say.
- A backup still in progress (``partial``: no manifest yet; ``unverified``: manifest
  written, verification not done) is never pruned while younger than ``grace``; older
  than that its run is considered dead and the leftovers are pruned.
- A backup that failed verification (``bad``) is pruned: it cannot be restored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

State = Literal["verified", "bad", "unverified", "partial"]


@dataclass(frozen=True)
class BackupRecord:
    """One backup as retention sees it: its id, when its data was taken, and its state."""

    id: str
    time: datetime
    state: State = "verified"

    @property
    def verified(self) -> bool:
        return self.state == "verified"


@dataclass(frozen=True)
class RetentionPolicy:
    keep_last: int = 3
    daily: int = 7
    weekly: int = 4
    monthly: int = 6
    grace: timedelta = timedelta(hours=24)

    def __post_init__(self) -> None:
        if self.keep_last < 1:
            raise ValueError("keep_last must be at least 1: the newest verified backup is always kept")
        for name in ("daily", "weekly", "monthly"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


@dataclass
class RetentionPlan:
    """Ids to keep (with every reason) and ids to delete (with the reason), newest first."""

    keep: dict[str, list[str]] = field(default_factory=dict)
    delete: dict[str, str] = field(default_factory=dict)

    def describe(self) -> list[str]:
        lines = [f"keep   {bid}: {', '.join(reasons)}" for bid, reasons in self.keep.items()]
        lines += [f"delete {bid}: {reason}" for bid, reason in self.delete.items()]
        return lines

    def to_dict(self) -> dict[str, object]:
        return {"keep": self.keep, "delete": self.delete}


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} has no time zone: retention needs aware datetimes")
    return moment.astimezone(UTC)


def _bucket_keeps(verified: list[BackupRecord], count: int, key, label: str, plan: RetentionPlan) -> None:
    """Keep the newest backup of each of the ``count`` most recent buckets that hold one."""
    seen: list[object] = []
    for record in verified:
        bucket = key(_utc(record.time))
        if bucket in seen:
            continue
        if len(seen) >= count:
            break
        seen.append(bucket)
        plan.keep.setdefault(record.id, []).append(f"{label} {_bucket_name(bucket)}")


def _bucket_name(bucket: object) -> str:
    if isinstance(bucket, tuple) and len(bucket) == 3 and bucket[0] == "W":
        return f"{bucket[1]}-W{bucket[2]:02d}"
    if isinstance(bucket, tuple) and len(bucket) == 2:
        return f"{bucket[0]}-{bucket[1]:02d}"
    return str(bucket)


def plan_retention(records: list[BackupRecord], policy: RetentionPolicy, now: datetime) -> RetentionPlan:
    """Decide, for every record, keep (why) or delete (why). Never deletes the newest verified."""
    now = _utc(now)
    ordered = sorted(records, key=lambda r: (_utc(r.time), r.id), reverse=True)
    verified = [r for r in ordered if r.verified]
    plan = RetentionPlan()

    if verified:
        plan.keep.setdefault(verified[0].id, []).append("newest verified")
    for record in verified[: policy.keep_last]:
        plan.keep.setdefault(record.id, []).append(f"last {policy.keep_last}")
    _bucket_keeps(verified, policy.daily, lambda t: t.date(), "daily", plan)
    _bucket_keeps(verified, policy.weekly, lambda t: ("W", *t.isocalendar()[:2]), "weekly", plan)
    _bucket_keeps(verified, policy.monthly, lambda t: (t.year, t.month), "monthly", plan)

    for record in ordered:
        if record.id in plan.keep:
            continue
        if record.state == "verified":
            plan.delete[record.id] = "not selected by any keep rule"
        elif record.state == "bad":
            plan.delete[record.id] = "failed verification"
        elif now - _utc(record.time) < policy.grace:
            plan.keep[record.id] = ["in progress"]
        else:
            plan.delete[record.id] = f"{record.state} for longer than {policy.grace} (abandoned run)"

    # Keep the report's order newest first, whatever order the rules added ids in.
    rank = {r.id: i for i, r in enumerate(ordered)}
    plan.keep = dict(sorted(plan.keep.items(), key=lambda item: rank[item[0]]))
    return plan

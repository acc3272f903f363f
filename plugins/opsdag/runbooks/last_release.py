"""The service's last release, from its reports, and whether a runbook may roll it back.

A release run writes ``<reports root>/release__<service>/<run_id>.json`` (``status``,
``finished_at``, ``image``, ``previous_image``). The last release is the newest one
whose status is ``promoted``; :func:`rollback_choice` says whether it is recent enough to
undo (younger than the runbook's ``max_age``) and still what serves, with the reason in
words and numbers either way. No Airflow here: the operator reads the files and acts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from opsdag.format import duration

NO_RECENT = "no recent release to roll back"


@dataclass(frozen=True)
class LastRelease:
    run_id: str
    image: str
    previous_image: str | None
    finished_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "image": self.image,
            "previous_image": self.previous_image,
            "finished_at": self.finished_at.isoformat(),
        }


@dataclass(frozen=True)
class RollbackChoice:
    """``release`` to undo (None: nothing to undo) and ``reason``, in words."""

    release: LastRelease | None
    reason: str


def read_release_reports(folder: Path) -> list[dict[str, Any]]:
    """The JSON reports of a release DAG (``<reports root>/release__<service>``); unreadable ones skipped."""
    reports = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            reports.append(data)
    return reports


def last_promoted(reports: Iterable[Mapping[str, Any]]) -> LastRelease | None:
    """The newest promoted release (by ``finished_at``) among a service's reports."""
    best: LastRelease | None = None
    for report in reports:
        if report.get("status") != "promoted" or report.get("dry_run") or not report.get("finished_at"):
            continue
        try:
            finished = datetime.fromisoformat(str(report["finished_at"]))
        except ValueError:
            continue
        if finished.tzinfo is None:
            continue
        release = LastRelease(
            run_id=str(report.get("run_id", "")),
            image=str(report.get("image", "")),
            previous_image=report.get("previous_image"),
            finished_at=finished,
        )
        if best is None or release.finished_at > best.finished_at:
            best = release
    return best


def rollback_choice(
    release: LastRelease | None, *, now: datetime, max_age: timedelta, stable_image: str | None
) -> RollbackChoice:
    """Whether ``release`` may be undone now: promoted less than ``max_age`` ago, still serving,
    with a previous version to go back to."""
    limit = duration(max_age.total_seconds())
    if release is None:
        return RollbackChoice(None, f"{NO_RECENT}: no promoted release in the reports")
    age = now - release.finished_at
    ago = duration(max(age.total_seconds(), 0))
    if age > max_age:
        return RollbackChoice(
            None,
            f"{NO_RECENT}: the last one ({release.image}, {release.run_id}) was promoted {ago} ago, "
            f"more than {limit}",
        )
    if not release.previous_image:
        return RollbackChoice(None, f"{NO_RECENT}: {release.run_id} recorded no previous version")
    if stable_image != release.image:
        return RollbackChoice(
            None,
            f"{NO_RECENT}: the platform serves {stable_image or 'nothing'}, not the last release's "
            f"{release.image} (changed since {release.run_id})",
        )
    return RollbackChoice(
        release,
        f"{release.image} was promoted {ago} ago ({release.run_id}, less than {limit}): "
        f"back to {release.previous_image}",
    )


def recent_releases(reports: Iterable[Mapping[str, Any]], count: int) -> list[dict[str, Any]]:
    """The ``count`` newest finished releases (any status, dry runs aside), newest first, for diagnostics."""
    rows = []
    for report in reports:
        if report.get("dry_run") or not report.get("finished_at"):
            continue
        rows.append(
            {
                "run_id": report.get("run_id"),
                "status": report.get("status"),
                "image": report.get("image"),
                "previous_image": report.get("previous_image"),
                "finished_at": str(report["finished_at"]),
            }
        )
    rows.sort(key=lambda row: row["finished_at"], reverse=True)
    return rows[:count]


def releases_detail(releases: list[dict[str, Any]], *, now: datetime) -> str:
    """``"last releases: manual__x promoted 17 s ago (1.0.0 -> 1.5.0-late); ..."`` (or none)."""
    if not releases:
        return "no release in the reports"
    parts = []
    for row in releases:
        try:
            ago = duration(max((now - datetime.fromisoformat(row["finished_at"])).total_seconds(), 0))
        except (TypeError, ValueError):
            ago = "?"
        change = f"{_tag(row.get('previous_image'))} -> {_tag(row.get('image'))}"
        parts.append(f"{row['run_id']} {row['status']} {ago} ago ({change})")
    return "last releases: " + "; ".join(parts)


def _tag(image: Any) -> str:
    """The version part of an image reference, for short lines (``repo:1.0.0`` -> ``1.0.0``)."""
    if not image:
        return "nothing"
    image = str(image)
    return image.rsplit("@", 1)[-1][:19] if "@" in image else image.rsplit(":", 1)[-1]

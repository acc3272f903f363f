"""The backup run's outcome in one Slack message: size, duration, throughput, or what failed.

Pure functions over what the run's tasks recorded (no Airflow import), so the wording
is unit-tested.
"""

from __future__ import annotations

from typing import Any


def human_bytes(value: float | None) -> str:
    if value is None:
        return "?"
    size = float(value)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def human_seconds(value: float | None) -> str:
    if value is None:
        return "?"
    if value < 120:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    if minutes < 120:
        return f"{minutes} min {seconds:02d} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"


def backup_outcome(
    *,
    database: str,
    backup: dict[str, Any] | None,
    manifest: dict[str, Any] | None,
    verification: dict[str, Any] | None,
    retention: dict[str, Any] | None,
    failed_task: str | None,
    error: str | None,
    run_id: str,
) -> dict[str, Any]:
    """Everything the message says, as data: ``ok``, figures and the failure if any."""
    timings = (backup or {}).get("timings", {})
    dump_seconds = timings.get("total_seconds")
    database_bytes = (backup or {}).get("database_bytes")
    stored = (manifest or {}).get("bytes")
    throughput = database_bytes / dump_seconds if database_bytes and dump_seconds else None
    return {
        "ok": failed_task is None,
        "database": database,
        "run_id": run_id,
        "backup_id": (backup or manifest or {}).get("backup_id"),
        "method": (backup or {}).get("method"),
        "database_bytes": database_bytes,
        "stored_bytes": stored,
        "backup_seconds": dump_seconds,
        "verify_seconds": (verification or {}).get("timings", {}).get("total_seconds"),
        "throughput_bytes_per_s": throughput,
        "pruned": len((retention or {}).get("deleted", [])),
        "failed_task": failed_task,
        "error": error,
    }


def backup_message(outcome: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """Slack text and Block Kit blocks for a backup run's outcome."""
    db = outcome["database"]
    if not outcome["ok"]:
        error = (outcome.get("error") or "see the task log").strip().splitlines()[0][:300]
        text = (
            f":red_circle: Backup of *{db}* FAILED at `{outcome['failed_task']}`: {error} "
            f"(run `{outcome['run_id']}`)"
        )
    else:
        text = (
            f":white_check_mark: Backup of *{db}* `{outcome['backup_id']}` verified: "
            f"{human_bytes(outcome['stored_bytes'])} stored from {human_bytes(outcome['database_bytes'])} "
            f"in {human_seconds(outcome['backup_seconds'])} "
            f"({human_bytes(outcome['throughput_bytes_per_s'])}/s), "
            f"verified in {human_seconds(outcome['verify_seconds'])}"
        )
        if outcome.get("pruned"):
            text += f"; {outcome['pruned']} old backup(s) pruned"
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    return text, blocks

"""The report of a backup run: its record built from the tasks' results, one summary line, and Markdown.

Written through ``reports.store`` to ``<reports root>/backup__<database>/<run_id>.md`` and
``.json``: the database, the backup's id and method, sizes, durations and throughput,
the verification, retention's decisions, or the step that failed and its error. Pure
functions (no Airflow import): the operator gathers the run's XComs into
``build_backup_report``'s arguments. The Slack message (``notify.backup_messages``) and
the run's note use ``backup_summary``, so they say what the report says.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from opsdag.format import duration, plain_text, size
from opsdag.reports.backup_record import BackupReport
from opsdag.reports.store import ReportPaths, write_report

BACKUP_STEPS = ["preflight", "backup", "manifest", "verify", "retention", "publish"]
WAL_STEP = "wal_continuity"


def backup_steps(wal_archive: bool) -> list[str]:
    """The backup DAG's steps in run order: the WAL check follows verify when WAL is archived."""
    return [*BACKUP_STEPS[:4], WAL_STEP, *BACKUP_STEPS[4:]] if wal_archive else list(BACKUP_STEPS)


def build_backup_report(
    *,
    database: str,
    run_id: str,
    backup: dict[str, Any] | None,
    manifest: dict[str, Any] | None,
    verification: dict[str, Any] | None,
    retention: dict[str, Any] | None,
    failed_task: str | None,
    error: str | None,
    dag_id: str | None = None,
    started_at: str | None = None,
    finished_at: str | None = None,
    states: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    preflight: dict[str, Any] | None = None,
    published: dict[str, Any] | None = None,
    backup_id: str | None = None,
    wal: dict[str, Any] | None = None,
    steps: list[str] | None = None,
) -> BackupReport:
    """The run's record: ``verified`` when no step failed, else ``failed`` with the first failure.

    ``wal`` is the WAL check's result (``wal_continuity``), ``steps`` the DAG's step names
    (default: without the WAL check).
    """
    states, errors = states or {}, errors or {}
    results = {
        "preflight": preflight,
        "backup": backup,
        "manifest": manifest,
        "verify": verification,
        WAL_STEP: wal,
        "retention": retention,
        "publish": published,
    }
    steps = [
        {
            "name": name,
            "status": states.get(name) or ("success" if results[name] else "not run"),
            "error": errors.get(name) or (error if name == failed_task else None),
        }
        for name in steps or BACKUP_STEPS
    ]
    problems = [f"{failed_task}: {error}"] if failed_task else []
    problems += [f"{s['name']}: {s['error']}" for s in steps if s["error"] and s["name"] != failed_task]
    if verification and verification.get("status") == "bad":
        problems += [f"verification: {p}" for p in verification.get("problems", [])]
    if wal and wal.get("status") not in (None, "ok"):
        problems.append(f"WAL archive: {wal.get('reason')}")
    timings = (backup or {}).get("timings") or {}
    backup_seconds = timings.get("total_seconds")
    database_bytes = (backup or {}).get("database_bytes") or (preflight or {}).get("database_bytes")
    throughput = database_bytes / backup_seconds if database_bytes and backup_seconds else None
    produced = backup or manifest or published or {}
    report = BackupReport.model_validate(
        {
            "dag_id": dag_id or f"backup__{database}",
            "run_id": run_id,
            "database": database,
            "result": "failed" if failed_task else "verified",
            "started_at": started_at,
            "finished_at": finished_at,
            "backup_id": produced.get("backup_id") or backup_id,
            "method": produced.get("method"),
            "server": (preflight or {}).get("server"),
            "server_version": (preflight or {}).get("server_version"),
            "consistent_at": produced.get("consistent_at") or (manifest or {}).get("consistent_at"),
            "location": (manifest or published or {}).get("location"),
            "database_bytes": database_bytes,
            "stored_bytes": (manifest or published or {}).get("bytes"),
            "files": (manifest or {}).get("files"),
            "tables": (manifest or {}).get("tables") or (backup or {}).get("tables"),
            "backup_seconds": backup_seconds,
            "dump_seconds": timings.get("dump_seconds"),
            "stats_seconds": timings.get("stats_seconds"),
            "verify_seconds": ((verification or {}).get("timings") or {}).get("total_seconds"),
            "throughput_bytes_per_s": throughput,
            "verification": verification,
            "retention": retention,
            "wal": wal,
            "published": bool(published),
            "steps": steps,
            "failed_task": failed_task,
            "error": error,
            "problems": list(dict.fromkeys(problems)),
        }
    )
    report.summary = backup_summary(report)
    return report


def _same(text: str) -> str:
    return text


def backup_summary(
    report: BackupReport, *, name: Callable[[str], str] = _same, code: Callable[[str], str] = _same
) -> str:
    """One line: the backup's size, time, throughput and verification, or where and why it failed.

    ``name`` and ``code`` mark up the database and the ids (Slack makes them bold and code).
    """
    db = name(report.database)
    if not report.ok:
        lines = (report.error or "see the task log").strip().splitlines() or ["see the task log"]
        return f"Backup of {db} FAILED at {code(report.failed_task or '?')}: {plain_text(lines[0])[:300]}"
    text = (
        f"Backup of {db} {code(report.backup_id or '?')} verified: "
        f"{size(report.stored_bytes)} stored from {size(report.database_bytes)} "
        f"in {duration(report.backup_seconds)} ({size(report.throughput_bytes_per_s)}/s), "
        f"verified in {duration(report.verify_seconds)}"
    )
    if report.wal is not None and report.wal.status == "ok":
        text += (
            f"; WAL archived up to {_when(report.wal.newest_at)} "
            f"(RPO {duration(report.wal.rpo_seconds)}, {report.wal.segments} segment(s) since the backup)"
        )
    if report.pruned:
        text += f"; {report.pruned} old backup(s) pruned"
    if report.retention and report.retention.dry_run and report.retention.delete:
        text += f"; retention dry run: {len(report.retention.delete)} old backup(s) would be pruned"
    return text


def write_backup_report(report: BackupReport, root: Path | str | None = None) -> ReportPaths:
    """Write the JSON and the Markdown atomically: ``<root>/<dag_id>/<run_id>.json|md``."""
    return write_report(
        report.to_json(), render_markdown(report), dag_id=report.dag_id, run_id=report.run_id, root=root
    )


# -- Markdown -------------------------------------------------------------------------


def _when(value: str | None) -> str:
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return plain_text(value)


def _cell(value: Any) -> str:
    """A table cell: one line, control characters dropped, ``|`` escaped."""
    return plain_text(str(value if value is not None else "-")).replace("|", "\\|") or "-"


def _figures(report: BackupReport) -> list[str]:
    backup_time = duration(report.backup_seconds)
    if report.dump_seconds is not None:
        backup_time += (
            f" (dump {duration(report.dump_seconds)}, table stats {duration(report.stats_seconds)})"
        )
    verification = report.verification
    verified = "-"
    if verification is not None:
        verified = f"{_cell(verification.status)} in {duration(report.verify_seconds)}"
        if verification.contents:
            verified += f": {_cell(verification.contents)}"
    return [
        "| | |",
        "|---|---|",
        f"| database size | {size(report.database_bytes)} |",
        f"| stored | {size(report.stored_bytes)} in {_cell(report.files)} file(s) |",
        f"| tables | {_cell(report.tables)} |",
        f"| backup time | {backup_time} |",
        f"| throughput | {size(report.throughput_bytes_per_s)}/s |",
        f"| verification | {verified} |",
    ]


def _retention_lines(report: BackupReport) -> list[str]:
    retention = report.retention
    if retention is None:
        return ["Did not run."]
    out = ["Dry run: nothing was deleted." if retention.dry_run else "Applied.", ""]
    out += ["| backup | decision | why |", "|---|---|---|"]
    for backup_id, reasons in retention.keep.items():
        out.append(f"| `{_cell(backup_id)}` | keep | {_cell(', '.join(reasons))} |")
    for backup_id, reason in retention.delete.items():
        decision = (
            "deleted" if backup_id in retention.deleted else "would delete" if retention.dry_run else "delete"
        )
        out.append(f"| `{_cell(backup_id)}` | {decision} | {_cell(reason)} |")
    return out


def _wal_lines(report: BackupReport) -> list[str]:
    wal = report.wal
    assert wal is not None
    out = [
        f"- {_cell(wal.status)}: {_cell(wal.reason)}",
        f"- chain from `{_cell(wal.start_segment)}` (the base backup's start) to "
        f"`{_cell(wal.newest_segment)}`: {_cell(wal.segments)} segment(s)",
        f"- newest archived point {_when(wal.newest_at)}: RPO {duration(wal.rpo_seconds)}",
    ]
    if wal.first_missing:
        out.append(f"- first missing segment `{_cell(wal.first_missing)}`")
    out += [f"- corrupt: {_cell(c)}" for c in wal.corrupt]
    kept = (report.retention.wal if report.retention else None) or {}
    if kept:
        out.append(
            f"- retention: {_cell(kept.get('reason'))}; {kept.get('deleted_files', 0)} file(s) pruned"
            + (f", {kept.get('delete_files', 0)} would be" if kept.get("dry_run") else "")
        )
    return out


def render_markdown(report: BackupReport) -> str:
    """The backup run's Markdown report."""
    out = [
        f"# Backup of `{report.database}`: {report.result.upper()}",
        "",
        f"> {plain_text(report.summary)}",
        "",
        f"- DAG run: `{report.dag_id}` / `{report.run_id}`",
        f"- started {_when(report.started_at)}, finished {_when(report.finished_at)}",
        "",
        "## Backup",
        "",
    ]
    if report.backup_id:
        out += [
            f"- id `{report.backup_id}` ({_cell(report.method)})",
            f"- consistent at {_when(report.consistent_at)}",
            f"- server {_cell(report.server)}, PostgreSQL {_cell(report.server_version)}",
            f"- location `{_cell(report.location)}`",
            f"- published for drills: {'yes' if report.published else 'no'}",
            "",
            *_figures(report),
        ]
    else:
        out.append("- none: no backup was taken")
    out += ["", "## Steps", "", "| step | status | error |", "|---|---|---|"]
    out += [f"| {s.name} | {s.status} | {_cell(s.error)} |" for s in report.steps]
    if report.wal is not None:
        out += ["", "## WAL archive", "", *_wal_lines(report)]
    out += ["", "## Retention", "", *_retention_lines(report)]
    if report.problems:
        out += ["", "## Problems", "", *[f"- {_cell(p)}" for p in report.problems]]
    out.append("")
    return "\n".join(out)

"""The report of a DR drill: its record built from the tasks' results, one summary line, and Markdown.

Written through ``reports.store`` to ``<reports root>/<dag_id>/<run_id>.md`` and ``.json``.
The Markdown ends with the trend of the drill's RTO over its last runs, read from the
JSON reports next to it (``drill_record.drill_history``). Pure functions (no Airflow
import): the operator gathers the run's XComs into ``build_drill_report``'s arguments.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from opsdag.format import duration, plain_text, size
from opsdag.reports.drill_record import DrillReport, drill_history
from opsdag.reports.drill_recovery import kind_of, recovery_lines, recovery_of, rpo_label
from opsdag.reports.store import ReportPaths, write_report

PHASES = ["pick_backup", "provision", "restore", "verify", "measure", "teardown"]
TREND_LENGTH = 10
_TIMINGS = {
    "fetch_seconds": "files checked and fetched",
    "prepare_seconds": "prepare",
    "pg_restore_seconds": "pg_restore",
    "start_seconds": "server start",
    "seconds": "restore",
    "task_seconds": "task",
}


def build_drill_report(
    *,
    dag_id: str,
    run_id: str,
    database: str,
    started_at: str,
    finished_at: str,
    states: dict[str, str],
    errors: dict[str, str],
    pick: dict[str, Any] | None,
    provision: dict[str, Any] | None,
    restore: dict[str, Any] | None,
    verification: dict[str, Any] | None,
    measure: dict[str, Any] | None,
    teardown: dict[str, Any] | None,
) -> DrillReport:
    """The drill's record; ``result`` is passed, failed or refused, ``problems`` lead with the cause."""
    phase_data = {
        "pick_backup": pick,
        "provision": provision,
        "restore": restore,
        "verify": verification,
        "measure": measure,
        "teardown": teardown,
    }
    phases = []
    for name in PHASES:
        data = phase_data[name] or {}
        status = states.get(name) or ("success" if phase_data[name] else "not run")
        if name == "verify" and verification is not None and not verification.get("ok"):
            status = "failed"
        seconds = data.get("task_seconds")
        phases.append(
            {
                "name": name,
                "status": status,
                "started_at": data.get("started_at"),
                "finished_at": data.get("finished_at"),
                "seconds": None if seconds is None else float(seconds),
                "error": errors.get(name),
            }
        )
    problems = [f"{name}: {errors[name]}" for name in PHASES if errors.get(name)]
    if verification is not None:
        problems += [
            f"table {t['table']}: {t['problem']}" for t in verification.get("tables", []) if not t["ok"]
        ]
        problems += [
            f"check {c['name']}: {c['problem']}" for c in verification.get("checks", []) if not c["ok"]
        ]
    if measure is not None:
        problems.extend(measure.get("problems", []))
    if teardown is not None and teardown.get("left_behind"):
        problems.extend(f"left behind: {item}" for item in teardown["left_behind"])
    if teardown is None and provision is not None:
        problems.append("teardown did not run")
    problems = list(dict.fromkeys(problems))  # one line per problem, first cause first

    refused = "refused" in (errors.get("provision") or "")
    passed = (
        not problems
        and bool((verification or {}).get("ok"))
        and bool((measure or {}).get("ok"))
        and bool((teardown or {}).get("clean"))
    )
    report = DrillReport.model_validate(
        {
            "dag_id": dag_id,
            "run_id": run_id,
            "database": database,
            "result": "refused" if refused else "passed" if passed else "failed",
            "started_at": started_at,
            "finished_at": finished_at,
            "backup": pick,
            "target": provision,
            "restore": restore,
            "phases": phases,
            "measure": measure,
            "verification": verification,
            "teardown": teardown,
            "problems": problems,
        }
    )
    report.summary = drill_summary(report)
    return report


def drill_summary(report: DrillReport) -> str:
    """One or two lines: result, backup, RTO/RPO against objectives, verification, first problem."""
    parts = [f"Drill of {report.database} {report.result.upper()}"]
    if report.backup is not None:
        parts.append(f"backup {report.backup.backup_id}")
    measure = report.measure
    if measure is not None:
        parts.append(
            f"RTO {duration(measure.rto_seconds)} (objective {duration(measure.rto_objective_seconds)})"
            if measure.rto_seconds is not None
            else "RTO not reached"
        )
        parts.append(
            f"RPO {duration(measure.rpo_seconds)} (objective {duration(measure.rpo_objective_seconds)})"
        )
    verification = report.verification
    recovery = recovery_of(report.backup)
    if recovery:
        parts.insert(2, f"recovered to {recovery.get('target')}")
    if verification is not None:
        tables, checks = verification.tables, verification.checks
        recovered = (verification.model_extra or {}).get("recovery")
        if isinstance(recovered, dict):
            marker = recovered.get("marker")
            if marker:
                parts.append("marker rows exact" if marker.get("ok") else "marker rows differ")
            parts.append(f"{sum(c.ok for c in checks)}/{len(checks)} checks pass")
        else:
            parts.append(
                f"{sum(t.ok for t in tables)}/{len(tables)} tables and "
                f"{sum(c.ok for c in checks)}/{len(checks)} checks match"
            )
    text = ", ".join(parts)
    if report.problems:
        text += f". {report.problems[0]}"
        if len(report.problems) > 1:
            text += f" (+{len(report.problems) - 1} more)"
    return text


def write_drill_report(report: DrillReport, root: Path | str | None = None) -> ReportPaths:
    """Write the JSON and the Markdown (with the trend of the earlier drills) atomically."""
    history = drill_history(report.dag_id, root, exclude_run_id=report.run_id)
    markdown = render_markdown(report, history)
    return write_report(report.to_json(), markdown, dag_id=report.dag_id, run_id=report.run_id, root=root)


# -- Markdown -------------------------------------------------------------------------


def _when(value: str | None) -> str:
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return plain_text(value)


def _ok(flag: bool | None) -> str:
    return "yes" if flag else "**NO**" if flag is not None else "-"


def _cell(value: Any) -> str:
    """A table cell: one line, control characters dropped, ``|`` escaped."""
    return plain_text(str(value if value is not None else "-")).replace("|", "\\|") or "-"


def trend(history: list[dict[str, Any]], current: DrillReport, length: int = TREND_LENGTH) -> list[str]:
    """Markdown lines: the last drills' RTO and RPO, with a bar of the RTO per run (the current one last)."""
    now = current.to_json()
    runs = [*history, now][-length:]
    values = [(r.get("measure") or {}).get("rto_seconds") for r in runs]
    top = max([v for v in values if v is not None] or [1.0]) or 1.0
    lines = ["| run | started | kind | result | RTO | RPO | |", "|---|---|---|---|---:|---:|---|"]
    for run, value in zip(runs, values, strict=True):
        bar = "█" * max(1, round(20 * value / top)) if value is not None else ""
        marker = " ← this drill" if run is now else ""
        rpo = (run.get("measure") or {}).get("rpo_seconds")
        lines.append(
            f"| `{_cell(run.get('run_id'))}` | {_when(run.get('started_at'))} | {_cell(kind_of(run))} | "
            f"{_cell(run.get('result'))} | {duration(value) if value is not None else '-'} | "
            f"{duration(rpo) if rpo is not None else '-'} | `{bar}`{marker} |"
        )
    if current.measure is not None:
        lines += [
            "",
            f"RTO objective: {duration(current.measure.rto_objective_seconds)}; "
            f"RPO objective: {duration(current.measure.rpo_objective_seconds)}.",
        ]
    return lines


def _backup_lines(report: DrillReport) -> list[str]:
    backup, target = report.backup, report.target
    if backup is None:
        out = ["- none: no backup could be picked"]
    else:
        out = [
            f"- id `{backup.backup_id}` ({backup.method}), {size(backup.bytes)}",
            f"- consistent at {_when(backup.consistent_at)}; PostgreSQL {backup.server_version}",
            f"- location `{backup.location}`",
        ]
        if backup.chosen_because:
            out.append(f"- chosen: {backup.chosen_because}")
        recovery = recovery_of(backup)
        if recovery:
            wal = recovery.get("wal") or {}
            aim = recovery.get("target")
            to = "the latest archived transaction" if aim == "latest" else f"point in time {aim}"
            newest = recovery.get("restorable_to")
            out += [
                f"- recovered with the WAL archive to {to}; the backups can restore from "
                f"{_when(recovery.get('restorable_from'))} to "
                f"{_when(newest) if newest else 'the end of the archive (no commit archived yet)'}",
                f"- WAL `{wal.get('start_segment')}` to `{wal.get('newest_segment')}` "
                f"({wal.get('segments')} segments, each matching its sha256)",
            ]
    if target is not None:
        out += ["", f"Restored into `{target.scratch_db or target.workdir}` on `{target.server}`."]
    return out


def _verification_lines(report: DrillReport) -> list[str]:
    verification = report.verification
    if verification is None:
        return ["Not verified: no restored copy."]
    recovered = (verification.model_extra or {}).get("recovery")
    if isinstance(recovered, dict):
        return recovery_lines(recovered, _when, _ok, _cell) + _check_lines(verification)
    out = [
        "| table | rows (backup) | rows (restored) | checksum | ok | problem |",
        "|---|---:|---:|---|---|---|",
    ]
    for t in verification.tables:
        if not t.expected_checksum:
            same = "-"
        else:
            same = "same" if t.expected_checksum == t.actual_checksum else "differs"
        out.append(
            f"| `{_cell(t.table)}` | {_cell(t.expected_rows)} | {_cell(t.actual_rows)} | {same} | "
            f"{_ok(t.ok)} | {_cell(t.problem or None)} |"
        )
    return out + _check_lines(verification)


def _check_lines(verification: Any) -> list[str]:
    if not verification.checks:
        return []
    out = ["", "| check | expected | got | ok |", "|---|---|---|---|"]
    for c in verification.checks:
        out.append(f"| {_cell(c.name)} | {_cell(c.expect)} | {_cell(c.got)} | {_ok(c.ok)} |")
    return out


def render_markdown(report: DrillReport, history: list[dict[str, Any]]) -> str:
    """The drill's Markdown report; ``history`` is the earlier reports' JSON, oldest first."""
    out = [
        f"# DR drill of `{report.database}`: {report.result.upper()}",
        "",
        f"> {plain_text(report.summary)}",
        "",
        f"- DAG run: `{report.dag_id}` / `{report.run_id}`",
        f"- started {_when(report.started_at)}, finished {_when(report.finished_at)}",
        "",
        "## Backup used",
        "",
        *_backup_lines(report),
        "",
        "## Phases",
        "",
        "| phase | status | started | time | error |",
        "|---|---|---|---:|---|",
    ]
    for phase in report.phases:
        took = duration(phase.seconds) if phase.seconds is not None else "-"
        started = _when(phase.started_at)
        out.append(f"| {phase.name} | {phase.status} | {started} | {took} | {_cell(phase.error)} |")
    timings = [(_TIMINGS.get(k, k), v) for k, v in (report.restore or {}).items() if k.endswith("seconds")]
    if timings:
        out += ["", "Restore timings: " + ", ".join(f"{name} {duration(v)}" for name, v in timings) + "."]
    out += ["", "## Objectives", ""]
    measure = report.measure
    if measure is not None:
        rto = duration(measure.rto_seconds) if measure.rto_seconds is not None else "-"
        out += [
            "| | measured | objective | met |",
            "|---|---:|---:|---|",
            f"| RTO (provisioning -> verified copy) | {rto} | "
            f"{duration(measure.rto_objective_seconds)} | {_ok(measure.rto_ok)} |",
            f"| {rpo_label(report)} | {duration(measure.rpo_seconds)} | "
            f"{duration(measure.rpo_objective_seconds)} | {_ok(measure.rpo_ok)} |",
        ]
    else:
        out.append("Not measured: the drill did not reach a verified copy.")
    out += ["", "## Verification", "", *_verification_lines(report), "", "## Teardown", ""]
    if report.teardown is not None:
        out += [f"- {_cell(action)}" for action in report.teardown.actions]
        out += [f"- **left behind**: {_cell(item)}" for item in report.teardown.left_behind]
    else:
        out.append(
            "- did not run (nothing was provisioned)" if report.target is None else "- **did not run**"
        )
    if report.problems:
        out += ["", "## Problems", "", *[f"- {_cell(p)}" for p in report.problems]]
    out += ["", "## Trend (RTO and RPO of the last drills)", "", *trend(history, report), ""]
    return "\n".join(out)

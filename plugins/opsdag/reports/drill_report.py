"""The report of a DR drill: Markdown for people, JSON for tools, one summary line for notes and Slack.

Written to ``<reports root>/<dag_id>/<run_id>.md`` and ``.json``. The Markdown ends with
the trend of the drill's RTO over its last runs, read from the JSON reports next to it.
Pure functions (no Airflow import): the operator gathers the run's XComs into
``build_report``'s arguments.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from opsdag.reports.backup import human_bytes, human_seconds

PHASES = ["pick_backup", "provision", "restore", "verify", "measure", "teardown"]
TREND_LENGTH = 10


def _seconds(value: Any) -> float | None:
    return None if value is None else float(value)


def build_report(
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
) -> dict[str, Any]:
    """The drill's outcome as one JSON-able dict; ``result`` is passed, failed or refused."""
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
        phases.append(
            {
                "name": name,
                "status": status,
                "started_at": data.get("started_at"),
                "finished_at": data.get("finished_at"),
                "seconds": _seconds(data.get("task_seconds")),
                "error": errors.get(name),
            }
        )
    problems: list[str] = []
    refused = any("refused" in (errors.get(n) or "") for n in ("provision",))
    for name in PHASES:
        if errors.get(name):
            problems.append(f"{name}: {errors[name]}")
    if verification is not None:
        for table in verification.get("tables", []):
            if not table["ok"]:
                problems.append(f"table {table['table']}: {table['problem']}")
        for check in verification.get("checks", []):
            if not check["ok"]:
                problems.append(f"check {check['name']}: {check['problem']}")
    if measure is not None:
        problems.extend(measure.get("problems", []))
    if teardown is not None and teardown.get("left_behind"):
        problems.extend(f"left behind: {item}" for item in teardown["left_behind"])
    if teardown is None and provision is not None:
        problems.append("teardown did not run")
    problems = list(dict.fromkeys(problems))  # one line per problem, first cause first

    passed = (
        not problems
        and verification is not None
        and verification.get("ok")
        and measure is not None
        and measure.get("ok")
        and teardown is not None
        and teardown.get("clean")
    )
    result = "refused" if refused else "passed" if passed else "failed"
    report = {
        "kind": "opsdag-drill-report/1",
        "dag_id": dag_id,
        "run_id": run_id,
        "database": database,
        "result": result,
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
    report["summary"] = summary(report)
    return report


def summary(report: dict[str, Any]) -> str:
    """One or two lines: result, backup, RTO/RPO against objectives, verification, first problem."""
    db = report["database"]
    result = report["result"].upper()
    parts = [f"Drill of {db} {result}"]
    backup = report.get("backup") or {}
    if backup.get("backup_id"):
        parts.append(f"backup {backup['backup_id']}")
    measure = report.get("measure") or {}
    if measure:
        rto = measure.get("rto_seconds")
        parts.append(
            f"RTO {human_seconds(rto)} (objective {human_seconds(measure['rto_objective_seconds'])})"
            if rto is not None
            else "RTO not reached"
        )
        parts.append(
            f"RPO {human_seconds(measure['rpo_seconds'])} "
            f"(objective {human_seconds(measure['rpo_objective_seconds'])})"
        )
    verification = report.get("verification") or {}
    if verification.get("tables") is not None:
        tables = verification["tables"]
        checks = verification.get("checks", [])
        parts.append(
            f"{sum(t['ok'] for t in tables)}/{len(tables)} tables and "
            f"{sum(c['ok'] for c in checks)}/{len(checks)} checks match"
        )
    text = ", ".join(parts)
    if report["problems"]:
        text += f". {report['problems'][0]}"
        if len(report["problems"]) > 1:
            text += f" (+{len(report['problems']) - 1} more)"
    return text


# -- files ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WrittenReport:
    markdown: Path
    json: Path


def safe_name(run_id: str) -> str:
    """The run id as a file name (only ``/`` and control characters are replaced)."""
    return re.sub(r"[/\x00-\x1f]", "_", run_id)


def load_history(root: Path, dag_id: str, *, exclude_run_id: str | None = None) -> list[dict[str, Any]]:
    """Earlier drill reports of ``dag_id``, oldest first."""
    reports = []
    for path in (root / dag_id).glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("kind") == "opsdag-drill-report/1" and data.get("run_id") != exclude_run_id:
            reports.append(data)
    return sorted(reports, key=lambda r: r.get("started_at") or "")


def write_report(report: dict[str, Any], root: Path) -> WrittenReport:
    directory = root / report["dag_id"]
    directory.mkdir(parents=True, exist_ok=True)
    history = load_history(root, report["dag_id"], exclude_run_id=report["run_id"])
    base = directory / safe_name(report["run_id"])
    md = base.with_name(base.name + ".md")
    js = base.with_name(base.name + ".json")
    for path, text in (
        (js, json.dumps(report, indent=2, default=str) + "\n"),
        (md, render_markdown(report, history)),
    ):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return WrittenReport(md, js)


# -- Markdown -------------------------------------------------------------------------


def _when(value: str | None) -> str:
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return value


def _ok(flag: bool | None) -> str:
    return "yes" if flag else "**NO**" if flag is not None else "-"


def _cell(value: Any) -> str:
    return str(value if value is not None else "-").replace("|", "\\|").replace("\n", " ")


def trend(history: list[dict[str, Any]], current: dict[str, Any], length: int = TREND_LENGTH) -> list[str]:
    """Markdown lines: the last drills' RTO as a table with a bar per run."""
    runs = [*history, current][-length:]
    values = [((r.get("measure") or {}).get("rto_seconds")) for r in runs]
    top = max([v for v in values if v is not None] or [1.0]) or 1.0
    objective = (current.get("measure") or {}).get("rto_objective_seconds")
    lines = ["| run | started | result | RTO | |", "|---|---|---|---:|---|"]
    for run, value in zip(runs, values, strict=True):
        bar = "█" * max(1, round(20 * value / top)) if value is not None else ""
        marker = " ← this drill" if run is current else ""
        lines.append(
            f"| `{_cell(run.get('run_id'))}` | {_when(run.get('started_at'))} | {run.get('result')} | "
            f"{human_seconds(value) if value is not None else '-'} | `{bar}`{marker} |"
        )
    if objective is not None:
        lines.append("")
        lines.append(f"RTO objective: {human_seconds(objective)}.")
    return lines


def render_markdown(report: dict[str, Any], history: list[dict[str, Any]]) -> str:
    backup = report.get("backup") or {}
    measure = report.get("measure") or {}
    verification = report.get("verification") or {}
    teardown = report.get("teardown") or {}
    target = report.get("target") or {}
    out = [
        f"# DR drill of `{report['database']}`: {report['result'].upper()}",
        "",
        f"> {report['summary']}",
        "",
        f"- DAG run: `{report['dag_id']}` / `{report['run_id']}`",
        f"- started {_when(report['started_at'])}, finished {_when(report['finished_at'])}",
        "",
        "## Backup used",
        "",
    ]
    if backup:
        out += [
            f"- id `{backup.get('backup_id')}` ({backup.get('method')}), {human_bytes(backup.get('bytes'))}",
            f"- consistent at {_when(backup.get('consistent_at'))}; "
            f"PostgreSQL {backup.get('server_version')}",
            f"- location `{backup.get('location')}`",
        ]
    else:
        out.append("- none: no backup could be picked")
    if target:
        where = target.get("scratch_db") or target.get("workdir")
        out += ["", f"Restored into `{where}` on `{target.get('server')}`."]
    out += ["", "## Phases", "", "| phase | status | started | seconds | error |", "|---|---|---|---:|---|"]
    for phase in report["phases"]:
        seconds = f"{phase['seconds']:.1f}" if phase["seconds"] is not None else "-"
        out.append(
            f"| {phase['name']} | {phase['status']} | {_when(phase['started_at'])} | {seconds} | "
            f"{_cell(phase['error'])} |"
        )
    restore = report.get("restore") or {}
    if restore:
        detail = ", ".join(f"{k} {v}" for k, v in restore.items() if k.endswith("seconds"))
        out += ["", f"Restore timings: {detail}."]
    out += ["", "## Objectives", ""]
    if measure:
        rto = measure.get("rto_seconds")
        out += [
            "| | measured | objective | met |",
            "|---|---:|---:|---|",
            f"| RTO (provisioning -> verified copy) | {human_seconds(rto) if rto is not None else '-'} | "
            f"{human_seconds(measure['rto_objective_seconds'])} | {_ok(measure['rto_ok'])} |",
            f"| RPO (backup age at drill start) | {human_seconds(measure['rpo_seconds'])} | "
            f"{human_seconds(measure['rpo_objective_seconds'])} | {_ok(measure['rpo_ok'])} |",
        ]
    else:
        out.append("Not measured: the drill did not reach a verified copy.")
    out += ["", "## Verification", ""]
    if verification.get("tables") is not None:
        out += [
            "| table | rows (backup) | rows (restored) | checksum | ok | problem |",
            "|---|---:|---:|---|---|---|",
        ]
        for t in verification["tables"]:
            same = (
                "same"
                if t["expected_checksum"] and t["expected_checksum"] == t["actual_checksum"]
                else ("-" if not t["expected_checksum"] else "differs")
            )
            out.append(
                f"| `{_cell(t['table'])}` | {t['expected_rows']} | {_cell(t['actual_rows'])} | {same} | "
                f"{_ok(t['ok'])} | {_cell(t['problem'])} |"
            )
        if verification.get("checks"):
            out += ["", "| check | expected | got | ok |", "|---|---|---|---|"]
            for c in verification["checks"]:
                out.append(
                    f"| {_cell(c['name'])} | {_cell(c['expect'])} | {_cell(c.get('got'))} | {_ok(c['ok'])} |"
                )
    else:
        out.append("Not verified: no restored copy.")
    out += ["", "## Teardown", ""]
    if teardown:
        out += [f"- {action}" for action in teardown.get("actions", [])]
        out += [f"- **left behind**: {item}" for item in teardown.get("left_behind", [])]
    else:
        out.append("- did not run (nothing was provisioned)" if not target else "- **did not run**")
    if report["problems"]:
        out += ["", "## Problems", ""] + [f"- {p}" for p in report["problems"]]
    out += ["", "## Trend (RTO of the last drills)", "", *trend(history, report), ""]
    return "\n".join(out)

"""Slack messages of the backup and drill DAGs (Block Kit), made from their reports' records.

The first line is the report's summary with Slack markup, so that Slack, the run's note
and the report say the same; failures are loud (the drill's mention ``@here``). Pure
functions: ``notify.slack.send_slack`` sends them.
"""

from __future__ import annotations

from typing import Any

from opsdag.format import plain_text
from opsdag.reports.backup_record import BackupReport
from opsdag.reports.backup_report import backup_summary
from opsdag.reports.drill_record import DrillReport

Blocks = list[dict[str, Any]]
PROBLEMS_SHOWN = 10


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _problems(problems: list[str]) -> dict[str, Any]:
    return _section("\n".join(f"• {plain_text(p)[:300]}" for p in problems[:PROBLEMS_SHOWN]))


def backup_message(report: BackupReport, *, report_file: str | None = None) -> tuple[str, Blocks]:
    """Slack text and blocks for a backup run: size, time, throughput, or the failing step and its error."""
    summary = backup_summary(report, name=lambda s: f"*{s}*", code=lambda s: f"`{s}`")
    text = f":white_check_mark: {summary}" if report.ok else f":red_circle: {summary} (run `{report.run_id}`)"
    blocks = [_section(text)]
    if not report.ok and len(report.problems) > 1:
        blocks.append(_problems(report.problems))
    if report_file:
        blocks.append(_context(f"Report: `{report_file}`"))
    return text, blocks


def drill_message(report: DrillReport, *, report_file: str | None = None) -> tuple[str, Blocks]:
    """Slack text and blocks for a drill: the result with RTO/RPO, or the failure with its problems."""
    if report.result == "passed":
        text = f":white_check_mark: {report.summary}"
    else:
        text = f":rotating_light: <!here> DR drill FAILED: {report.summary}"
    blocks = [_section(text)]
    if report.result != "passed" and len(report.problems) > 1:
        blocks.append(_problems(report.problems))
    if report_file:
        blocks.append(_context(f"Report: `{report_file}`"))
    return text, blocks

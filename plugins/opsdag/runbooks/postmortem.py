"""The postmortem of an incident run: its figures, its Markdown and JSON, written as the run's report.

The figures (time to mitigate, MTTR, the timeline, the summary line) are a pure function
of the record (``postmortem_figures``), so the Markdown, the JSON, the run's note and a
Slack message say the same. The Markdown comes from a Jinja2 template a team may replace
(``template=``); the JSON carries the same facts under stable keys
(``opsdag.incident-report/1``) and reads back into the record
(``IncidentRecord.from_data``). Both go through the one report writer
(``reports.store.write_report``): ``<reports root>/runbook__<runbook>/<run_id>.md`` and ``.json``.

- time to mitigate: the alert's ``startsAt`` to the end of the first mitigating action
  (``kind: mitigate``) that was done; a dry run mitigates nothing.
- MTTR: ``startsAt`` to the verified recovery, else "not recovered".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from opsdag.format import duration, plain_text
from opsdag.reports.store import ReportPaths, report_format, write_report
from opsdag.runbooks.postmortem_record import IncidentRecord

FORMAT = report_format("incident", 1)
RESULTS = ("done", "failed", "skipped", "planned")
DEFAULT_TEMPLATE = Path(__file__).with_name("templates") / "postmortem.md.j2"
ROOT_CAUSE_PLACEHOLDER = "_To be written by a person: what caused it, and why it was not caught earlier._"
FOLLOW_UPS_PLACEHOLDER = "_To be written by a person: what changes, who owns it, by when._"


class PostmortemTemplateError(ValueError):
    """The postmortem template is missing or invalid; the message names the file (and line)."""


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    since_start_seconds: float
    event: str


@dataclass(frozen=True)
class PostmortemFigures:
    """What the postmortem states, computed from the record alone."""

    summary: str
    recovered: bool
    changed: list[str]  # the steps that changed something (destructive and done)
    mitigated_by: str | None
    time_to_mitigate_seconds: float | None
    mttr_seconds: float | None
    results: dict[str, int]
    timeline: list[TimelineEntry]
    problems: list[str] = field(default_factory=list)

    @property
    def time_to_mitigate(self) -> str:
        if self.time_to_mitigate_seconds is not None:
            return duration(self.time_to_mitigate_seconds)
        return "not mitigated"

    @property
    def mttr(self) -> str:
        return duration(self.mttr_seconds) if self.mttr_seconds is not None else "not recovered"

    def to_dict(self) -> dict[str, Any]:
        """The figures for the JSON (the summary and timeline are top-level keys there)."""
        data = asdict(self)
        del data["summary"], data["timeline"]
        return data


def postmortem_figures(record: IncidentRecord) -> PostmortemFigures:
    """Time to mitigate, MTTR, the timeline and the summary line of ``record``."""
    start = record.alert.startsAt
    done = [a for a in record.actions if a.result == "done"]
    changed = [a.step for a in done if a.destructive]
    problems = []
    if record.dry_run and changed:
        problems.append(f"a dry run changes nothing, yet {_names(changed)} recorded as done")
    mitigations = [a for a in done if a.kind == "mitigate" and a.ended_at is not None]
    first = None if record.dry_run else min(mitigations, key=lambda a: a.ended_at, default=None)
    recovered = bool(record.verify and record.verify.recovered)
    return PostmortemFigures(
        summary=_summary(record, first, recovered, changed),
        recovered=recovered,
        changed=changed,
        mitigated_by=first.step if first else None,
        time_to_mitigate_seconds=(first.ended_at - start).total_seconds() if first else None,
        mttr_seconds=(record.verify.at - start).total_seconds() if recovered else None,
        results={r: sum(a.result == r for a in record.actions) for r in RESULTS},
        timeline=timeline(record),
        problems=problems,
    )


def timeline(record: IncidentRecord) -> list[TimelineEntry]:
    """From the alert's start through each action, escalation and the verification, in time order.

    Actions that never started (skipped, planned without a time) are in the actions
    table only. Equal times keep the record's order.
    """
    alert = record.alert
    events: list[tuple[datetime, str]] = [(alert.startsAt, f"alert {alert.name} started firing")]
    for a in record.actions:
        if a.started_at is None:
            continue
        took = f" after {duration(a.seconds)}" if a.seconds is not None else ""
        detail = f": {plain_text(a.detail)}" if a.detail else ""
        events.append((a.started_at, f"{a.step} ({a.kind}, {a.action}): {a.result}{took}{detail}"))
    for e in record.escalations:
        events.append((e.at, f"escalated to {e.to}" + (f": {plain_text(e.reason)}" if e.reason else "")))
    if record.verify is not None and record.verify.at is not None:
        verdict = "recovery verified" if record.verify.recovered else "not recovered"
        detail = f": {plain_text(record.verify.detail)}" if record.verify.detail else ""
        events.append((record.verify.at, verdict + detail))
    if alert.status == "resolved" and alert.endsAt is not None:
        events.append((alert.endsAt, f"alert {alert.name} resolved"))
    events.sort(key=lambda e: e[0])
    return [TimelineEntry(at, (at - alert.startsAt).total_seconds(), text) for at, text in events]


def _summary(record: IncidentRecord, first: Any, recovered: bool, changed: list[str]) -> str:
    """One line: the alert, the outcome with its figures, and what a reader must know first."""
    start = record.alert.startsAt
    head = f"{record.alert.name} ({record.runbook})"
    if record.dry_run:
        if changed:
            return f"{head}: dry run, yet {_names(changed)} recorded as done: check what changed"
        planned = sum(a.result == "planned" for a in record.actions)
        text = f"{head}: dry run, nothing was changed; {planned} step(s) planned"
        if recovered:
            text += f"; recovered after {duration((record.verify.at - start).total_seconds())}"
        return text
    if recovered:
        text = f"{head}: recovered after {duration((record.verify.at - start).total_seconds())}"
        if first is not None:
            text += f", mitigated by {first.step} after {duration((first.ended_at - start).total_seconds())}"
    else:
        failed = [a.step for a in record.actions if a.result == "failed"]
        text = f"{head}: not recovered" + (f"; {', '.join(failed)} failed" if failed else "")
    if record.escalations:
        text += f"; escalated to {', '.join(dict.fromkeys(e.to for e in record.escalations))}"
    return text


def _names(steps: list[str]) -> str:
    return ", ".join(steps) + (" was" if len(steps) == 1 else " were")


# -- the report ----------------------------------------------------------------------


def postmortem_data(record: IncidentRecord) -> dict[str, Any]:
    """The JSON: format, summary, the record's fields, the figures and the timeline."""
    figures = postmortem_figures(record)
    return {
        "format": FORMAT,
        "summary": figures.summary,
        **record.model_dump(mode="json"),
        "figures": figures.to_dict(),
        "timeline": [
            {"at": e.at.isoformat(), "since_start_seconds": e.since_start_seconds, "event": e.event}
            for e in figures.timeline
        ],
    }


def render_postmortem(record: IncidentRecord, template: Path | str | None = None) -> str:
    """The Markdown postmortem from ``template`` (default: ``templates/postmortem.md.j2``).

    The template sees ``record``, ``alert``, ``figures`` and the two placeholders, and the
    filters ``cell`` (a safe table cell), ``text``, ``duration`` and ``when``. It runs in
    Jinja2's sandbox with undefined names as errors, so a typo fails the render, naming
    the file, instead of leaving a blank.
    """
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    path = Path(template) if template is not None else DEFAULT_TEMPLATE
    if not path.is_file():
        raise PostmortemTemplateError(f"{path}: no such postmortem template (a file is needed)")
    env = SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(path.parent)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # Markdown: user text goes through the `cell`/`text` filters
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(cell=_cell, text=plain_text, duration=duration, when=_when)
    figures = postmortem_figures(record)
    context = {
        "record": record,
        "alert": record.alert,
        "figures": figures,
        "root_cause_placeholder": ROOT_CAUSE_PLACEHOLDER,
        "follow_ups_placeholder": FOLLOW_UPS_PLACEHOLDER,
    }
    try:
        return env.get_template(path.name).render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise PostmortemTemplateError(f"{exc.filename or path}:{exc.lineno}: {exc.message}") from exc
    except jinja2.TemplateNotFound as exc:
        raise PostmortemTemplateError(f"{path}: includes {exc.name!r}, not found in {path.parent}") from exc
    except jinja2.TemplateError as exc:
        raise PostmortemTemplateError(f"{path}: {exc.message or exc}") from exc


def write_postmortem(
    record: IncidentRecord, root: Path | str | None = None, *, template: Path | str | None = None
) -> ReportPaths:
    """Write the run's postmortem (JSON and Markdown) under ``root`` (default: the reports root).

    Both are made before either is written: a template that fails leaves the previous
    report untouched.
    """
    markdown = render_postmortem(record, template)
    data = postmortem_data(record)
    return write_report(data, markdown, dag_id=record.dag_id, run_id=record.run_id, root=root)


def write_postmortem_with(
    record: IncidentRecord, template: Path | str | None, root: Path | str | None = None
) -> tuple[ReportPaths, str | None]:
    """Write the postmortem with the runbook's ``template``; the record is never lost to a template.

    A missing or broken template: the postmortem is written with the default template and
    the second value says what is wrong with the team's file (None: it was used).
    """
    if template is None:
        return write_postmortem(record, root), None
    try:
        return write_postmortem(record, root, template=template), None
    except PostmortemTemplateError as exc:
        return write_postmortem(record, root), str(exc)


def _cell(value: Any) -> str:
    """A table cell: one line, control characters dropped, ``|`` escaped."""
    return plain_text(str(value if value is not None else "-")).replace("|", "\\|") or "-"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "-"

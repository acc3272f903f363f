"""The release report as Markdown: outcome first, then checks, stages, validation, figures, actions.

Every piece of text that is not the report's own markup goes through
:func:`markdown_text`: the run's reason, image references, errors and reasons quoted
from tasks can carry anything a user typed (a conf key, an image reference), so control
and bidirectional-override characters are dropped and HTML and Markdown are neutralised.
A missing figure reads "no data", never 0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from opsdag.analysis.summary import MetricSummary
from opsdag.format import NO_DATA, duration, latency, number, percent, plain_text, rate
from opsdag.reports.release_record import ReleaseRecord, StageRecord, as_record, seconds_between
from opsdag.reports.release_wording import (
    HEADLINES,
    PHASE_WORDS,
    STATUS_WORDS,
    SUMMARY_MAX,
    clip,
    impact,
    next_actions,
    stable_serves,
    strategy_text,
    summary,
)

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_BACKSLASHED = set("\\`*[]~|")
# A run of underscores not inside a word (``_em_``, ``x_``); inside one (``stage_10``,
# ``manual__2026``) it can neither open nor close emphasis and stays readable.
_OUTER_UNDERSCORES = re.compile(r"(?<!\w)_++|(?<!_)_++(?!\w)")
_LINE_START = re.compile(r"^(#|[-+]|\d+[.)])")  # would start a heading or a list if first on a line


def markdown_text(text: Any, *, line_start: bool = False) -> str:
    """``text`` as inline Markdown that shows exactly what it says, on one line.

    Control and bidi-override characters are dropped, ``&``, ``<``, ``>`` become entities
    (no HTML, no autolink), ``\\ ` * [ ] ~ |`` are backslash-escaped (no emphasis, link,
    code or table cell break), and so is ``_`` unless it is inside a word (``stage_10``
    stays readable). With ``line_start`` (the text begins a line or a list item) a leading
    ``#``, ``-``, ``+`` or ``1.`` is escaped too, so it cannot start a heading or a list.
    """
    plain = plain_text("" if text is None else str(text))
    out = []
    for ch in plain:
        if ch in _ENTITIES:
            out.append(_ENTITIES[ch])
        elif ch in _BACKSLASHED:
            out.append("\\" + ch)
        else:
            out.append(ch)
    escaped = _OUTER_UNDERSCORES.sub(lambda m: "\\_" * len(m.group()), "".join(out))
    match = _LINE_START.match(escaped) if line_start else None
    if match:
        mark = match.group(1)
        escaped = mark[:-1] + "\\" + escaped[len(mark) - 1 :]
    return escaped


def note_markdown(text: str, limit: int = SUMMARY_MAX) -> str:
    """A summary as the run's note (Airflow's UI renders notes as Markdown): escaped, and
    clipped before escaping so that the note fits ``limit`` without cutting an escape in two."""
    shown = markdown_text(text)
    while len(shown) > limit:
        text = clip(text, len(text) - (len(shown) - limit))
        shown = markdown_text(text)
    return shown


def _cell(text: Any) -> str:
    """Text that keeps a Markdown table cell whole (``|`` is escaped by :func:`markdown_text`)."""
    return markdown_text(text) or " "


def _code(text: str | None) -> str:
    """An image reference or an id as inline code (a backtick inside could end it early)."""
    plain = plain_text(text).replace("`", "'")
    return f"`{plain}`" if plain else NO_DATA


def _when(start: str | None, end: str | None) -> str:
    if not start and not end:
        return ""
    return f"{start or '?'} → {end or '?'}"


def _check_result(ok: bool | None) -> str:
    return {True: "ok", False: "FAILED", None: "not run"}[ok]


def _measurements(m: MetricSummary) -> str:
    text = f"{m.passed} pass, {m.failed} fail, {m.inconclusive} inconclusive"
    return text + (f", {m.errors} error" if m.errors else "")


def _stage_title(stage: StageRecord) -> str:
    title = stage.name
    if stage.weight is not None:
        title += f": {stage.weight} %"
        if stage.bake_s is not None:
            title += f" for {duration(stage.bake_s)}"
    word = {"passed": "passed", "failed": "FAILED", "running": "INTERRUPTED"}.get(stage.status, stage.status)
    return f"{title}: {word}"


def _render_stage(stage: StageRecord) -> list[str]:
    lines = [f"### {markdown_text(_stage_title(stage))}", ""]
    when = _when(stage.started_at, stage.finished_at)
    if when:
        lines += [f"{when} ({duration(seconds_between(stage.started_at, stage.finished_at))})", ""]
    if stage.reason:
        lines += [markdown_text(stage.reason, line_start=True), ""]
    if not stage.metrics:
        return [*lines, "No metric was judged in this stage.", ""]
    lines += [
        "| Metric | Verdict | Last value | Stable baseline | Limit | Measurements | Reason |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in stage.metrics:
        cells = (
            m.metric,
            PHASE_WORDS.get(m.phase, m.phase),
            number(m.last_value),
            number(m.last_baseline),
            m.limit or NO_DATA,
            _measurements(m),
            m.reason,
        )
        lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    return [*lines, ""]


def _render_stages(record: ReleaseRecord) -> list[str]:
    lines = ["## Stages", ""]
    if not record.stages:
        return [*lines, "No stage was recorded.", ""]
    if record.status == "planned":
        lines += ["Planned, not run (dry run):", "", "| Stage | Weight | Bake |", "|---|---|---|"]
        for s in record.stages:
            weight = f"{s.weight} %" if s.weight is not None else NO_DATA
            lines.append(f"| {_cell(s.name)} | {weight} | {duration(s.bake_s)} |")
        return [*lines, ""]
    for stage in record.stages:
        if stage.status not in ("not_run", "skipped"):
            lines += _render_stage(stage)
    for status, word in (("not_run", "Not run"), ("skipped", "Skipped")):
        group = [s.label for s in record.stages if s.status == status]
        if group:
            lines += [f"{word}: {markdown_text(', '.join(group))}.", ""]
    return lines


def _render_build(record: ReleaseRecord) -> list[str]:
    """The image build, when the run built its image (or tried to)."""
    build = record.build
    failed = record.failure is not None and record.failure.task_id == "build"
    if build is None and not failed:
        return []
    lines = ["## Image build", ""]
    if build is None:
        error = record.failure.error if record.failure else ""
        return [*lines, f"Failed, before any change to the platform: {markdown_text(error)}", ""]
    how = "not rebuilt: this context and version were pushed before" if build.cached else "built and pushed"
    lines += [
        f"- Result: {how}, in {duration(build.build_seconds)} ({markdown_text(build.builder)} builder)",
        f"- Version: {_code(build.version)}",
        f"- Deployed by digest: {_code(build.image)}",
        f"- Pushed to: {_code(build.pushed_to)}",
        f"- Built from: {markdown_text(build.detail)}",
    ]
    if build.labels:
        lines += ["", "| Label | Value |", "|---|---|"]
        lines += [f"| {_cell(key)} | {_cell(value)} |" for key, value in sorted(build.labels.items())]
    return [*lines, ""]


def _render_checks(record: ReleaseRecord) -> list[str]:
    lines = ["## Pre-deployment checks", ""]
    checks = record.preflight.checks
    if not checks:
        return [*lines, "No pre-deployment check was recorded.", ""]
    lines += ["| Check | Result | Detail |", "|---|---|---|"]
    lines += [f"| {_cell(c.name)} | {_check_result(c.ok)} | {_cell(c.detail)} |" for c in checks]
    return [*lines, ""]


def _render_post_promotion(record: ReleaseRecord) -> list[str]:
    post = record.post_promotion
    if post.ok is None:
        why = {
            "rolled_back": " (the release was rolled back before promotion)",
            "refused": " (the release was refused)",
            "planned": " (dry run)",
        }.get(record.status, "")
        text = f"Not run{why}."
    else:
        detail = f": {markdown_text(post.detail)}" if post.detail else "."
        text = ("Passed" if post.ok else "FAILED") + detail
    return ["## Post-deployment validation", "", text, ""]


def _render_monitoring(record: ReleaseRecord) -> list[str]:
    mon = record.monitoring
    lines = ["## Monitoring", ""]
    if mon.window_s is not None:
        lines += [f"Over {duration(mon.window_s)} of the release, stable and new version together.", ""]
    error_rate = (
        NO_DATA if mon.error_rate is None else f"{number(mon.error_rate)} ({percent(mon.error_rate)})"
    )
    return [
        *lines,
        "| Figure | Value |",
        "|---|---|",
        f"| Availability | {percent(mon.availability)} |",
        f"| Latency p50 | {latency(mon.latency_p50_s)} |",
        f"| Latency p95 | {latency(mon.latency_p95_s)} |",
        f"| Latency p99 | {latency(mon.latency_p99_s)} |",
        f"| Error rate | {error_rate} |",
        f"| Throughput | {rate(mon.throughput_rps)} |",
        "",
    ]


def _render_incidents(record: ReleaseRecord) -> list[str]:
    lines = ["## Incidents and rollback", ""]
    rollback = record.rollback
    if rollback is None or not rollback.performed:
        why = f" ({markdown_text(rollback.reason)})" if rollback and rollback.reason else ""
        lines.append(f"- Rollback: none{why}")
    else:
        when = f", {_when(rollback.started_at, rollback.finished_at)}" if rollback.started_at else ""
        lines.append(f"- Rollback: performed in {duration(rollback.duration_s)}{when}")
        if rollback.reason:
            lines.append(f"  - why: {markdown_text(rollback.reason)}")
        lines.append(f"  - now: {markdown_text(stable_serves(record))}")
    if record.incidents:
        lines += [f"- Incident: {markdown_text(i)}" for i in record.incidents]
    else:
        lines.append("- Incidents: none recorded")
    return [*lines, ""]


def render_markdown(record: ReleaseRecord | Mapping[str, Any]) -> str:
    """The whole report as Markdown: outcome first, then checks, stages, validation, figures, actions."""
    record = as_record(record)
    dry = " (dry run)" if record.dry_run and record.status != "planned" else ""
    headline = HEADLINES[record.status] + dry
    when = f" ({_when(record.started_at, record.finished_at)})" if record.started_at else ""
    lines = [
        f"# Release of {markdown_text(record.service)}: {headline}",
        "",
        f"**{markdown_text(summary(record))}**",
        "",
        "## Summary",
        "",
        f"- Status: {STATUS_WORDS[record.status]}{dry}",
        f"- Service: {markdown_text(record.service)}",
        f"- New image: {_code(record.image)}",
        f"- Stable image before: {_code(record.previous_image)}",
        f"- Strategy: {markdown_text(strategy_text(record))}",
        f"- Duration: {duration(record.duration_s)}{when}",
        f"- Impact: {markdown_text(impact(record))}",
        f"- Reason given: {markdown_text(record.reason) or 'none'}",
        f"- Run: {_code(record.dag_id)} / {_code(record.run_id or None)}",
        "",
    ]
    lines += _render_build(record)
    lines += _render_checks(record)
    lines += _render_stages(record)
    lines += _render_post_promotion(record)
    lines += _render_monitoring(record)
    lines += _render_incidents(record)
    lines += ["## Next actions", ""]
    lines += [
        f"{i}. {markdown_text(action, line_start=True)}"
        for i, action in enumerate(next_actions(record), start=1)
    ]
    return "\n".join([*lines, ""])

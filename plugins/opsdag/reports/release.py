"""The report of a release: Markdown for people, JSON for tools, one summary line for the run's note.

Everything here is a pure function of a :class:`~opsdag.reports.release_record.ReleaseRecord`
(or its dict form), apart from :func:`write_report`, which puts both files in place.
The report is written for someone woken at 3 a.m.: the outcome in words first, then
why, with the numbers, in the manner of Argo Rollouts ("error-rate 0.081 > max 0.02").
A missing figure reads "no data", never 0: a canary without data was not healthy.

Files: ``<reports root>/<dag_id>/<run_id>.md`` and ``.json``. Airflow run ids contain
``:`` and ``+`` (``manual__2026-11-24T05:00:00+00:00``); they are kept as they are (both
are ordinary characters in POSIX file names, and Airflow does not run on Windows).
Anything outside Airflow's default ``allowed_run_id_pattern`` (``[A-Za-z0-9_.~:+-]``),
``/`` above all, is percent-encoded, so a file name never leaves its directory; see
:func:`safe_file_name`. Each file is replaced atomically (temporary file in the same
directory, fsync, rename): a reader sees the old report or the new one, never half of
one, and writing the same run again overwrites it with the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from opsdag.reports.release_record import ReleaseRecord, Stage, as_record, seconds_between

NO_DATA = "no data"

HEADLINES = {
    "promoted": "PROMOTED",
    "rolled_back": "ROLLED BACK",
    "refused": "REFUSED",
    "failed": "FAILED",
    "planned": "PLANNED (dry run)",
}
STATUS_WORDS = {
    "promoted": "promoted",
    "rolled_back": "rolled back",
    "refused": "refused",
    "failed": "failed",
    "planned": "planned (dry run, nothing changed)",
}

# Airflow's default [core] allowed_run_id_pattern: these characters stay as they are.
_SAFE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.~:+-")
SUMMARY_MAX = 1000  # Airflow's DagRunNote.content is String(1000)
_MAX_NAME_BYTES = 240  # room for ".json" and a temporary file's prefix within 255 bytes


# ---------------------------------------------------------------------------- numbers in words


def number(value: float | None) -> str:
    """A figure as people read it (``0.081``, ``2``, ``inf``); None is ``no data``."""
    if value is None:
        return NO_DATA
    return f"{value:.4g}"


def percent(ratio: float | None) -> str:
    """A ratio as a percentage without rounding 99.999 % up to 100 %; None is ``no data``."""
    if ratio is None:
        return NO_DATA
    text = f"{ratio * 100:.3f}".rstrip("0").rstrip(".")
    return f"{text} %"


def latency(seconds: float | None) -> str:
    if seconds is None:
        return NO_DATA
    if abs(seconds) < 1:
        return f"{seconds * 1000:.3g} ms"
    return f"{seconds:.3g} s"


def rate(rps: float | None) -> str:
    if rps is None:
        return NO_DATA
    return f"{rps:.0f} req/s" if rps >= 100 else f"{rps:.3g} req/s"


def duration(seconds: float | None) -> str:
    """``41 s``, ``2 min 14 s``, ``1 h 3 min``; None is ``no data``."""
    if seconds is None:
        return NO_DATA
    total = round(seconds)
    if total < 60:
        return f"{max(total, 0)} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def short_image(reference: str | None) -> str:
    """The part of an image reference people recognise: the tag, or a shortened digest."""
    if not reference:
        return "?"
    if "@" in reference:
        digest = reference.split("@", 1)[1]
        algorithm, _, hexdigits = digest.partition(":")
        return f"{algorithm}:{hexdigits[:12]}" if hexdigits else digest
    last = reference.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else reference


# ---------------------------------------------------------------------------- what happened


def _weights(stages: tuple[Stage, ...]) -> str:
    weights = [str(s.weight) for s in stages if s.weight is not None]
    return " → ".join(weights) + " %" if weights else ""


def strategy_text(record: ReleaseRecord) -> str:
    """``canary, 4 stages: 10 → 25 → 50 → 100 %``."""
    text = record.strategy or "unknown strategy"
    if record.stages:
        count = len(record.stages)
        text += f", {count} stage{'s' if count != 1 else ''}"
        weights = _weights(record.stages)
        if weights:
            text += f": {weights}"
    return text


def failed_stage(record: ReleaseRecord) -> Stage | None:
    """The stage where the release stopped: the first that failed (or was interrupted)."""
    return next((s for s in record.stages if s.status in ("failed", "running")), None)


def _stage_label(stage: Stage) -> str:
    return f"{stage.name} ({stage.weight} %)" if stage.weight is not None else stage.name


def stage_cause(stage: Stage) -> str:
    """Why a stage failed, in words with numbers: the failing metrics' reasons, else the stage's."""
    bad = [m.reason or f"{m.name} {m.phase}" for m in stage.metrics if m.phase in ("failed", "error")]
    if bad:
        return "; ".join(bad)
    return stage.reason


def cause(record: ReleaseRecord) -> str:
    """The reason the release did not go through (empty when it did)."""
    if record.status == "promoted":
        return ""
    stage = failed_stage(record)
    if stage is not None and stage_cause(stage):
        return stage_cause(stage)
    failed_checks = [c for c in record.preflight if c.ok is False]
    if failed_checks:
        return "; ".join(
            f"pre-deployment check {c.name} failed" + (f": {c.detail}" if c.detail else "")
            for c in failed_checks
        )
    if record.post_promotion.ok is False:
        return "post-deployment validation failed" + (
            f": {record.post_promotion.detail}" if record.post_promotion.detail else ""
        )
    if record.rollback is not None and record.rollback.reason:
        return record.rollback.reason
    return ""


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _stable_serves(record: ReleaseRecord) -> str:
    if record.previous_image:
        return f"stable {short_image(record.previous_image)} serves 100 %"
    return "the stable version serves 100 %"


def _rollback_state(record: ReleaseRecord) -> str:
    if record.rollback is not None and record.rollback.performed:
        return f"rolled back, {_stable_serves(record)}"
    if not any(s.ran for s in record.stages):
        return f"nothing was changed, {_stable_serves(record)}"
    return "no rollback recorded: check which version serves traffic"


def summary(record: ReleaseRecord | Mapping[str, Any]) -> str:
    """One or two lines for the DAG run's note and for Slack.

    ``demo-api 1.2.0-errors rolled back at stage_10 (10 %): error-rate 0.081 > max 0.02;
    stable 1.0.0 serves 100 %. 41 s.`` At most :data:`SUMMARY_MAX` characters: Airflow
    keeps a run's note in a ``String(1000)`` column.
    """
    return _clip(_summary(as_record(record)), SUMMARY_MAX)


def _summary(record: ReleaseRecord) -> str:
    who = f"{record.service} {short_image(record.image)}"
    why = _clip(cause(record), 300)
    took = f" {duration(record.duration_s)}." if record.duration_s is not None else ""
    status = record.status
    if status == "promoted":
        ran = [s for s in record.stages if s.status == "passed"]
        after = (
            f" after {len(ran)} stage{'s' if len(ran) != 1 else ''} ({_weights(tuple(ran))})" if ran else ""
        )
        gates = ", every gate passed" if ran else ""
        return f"{who} promoted: serves 100 %{after}{gates}.{took}"
    if status == "rolled_back":
        stage = failed_stage(record)
        where = f" at {_stage_label(stage)}" if stage else ""
        return f"{who} rolled back{where}: {why or 'no reason recorded'}; {_stable_serves(record)}.{took}"
    if status == "refused":
        return (
            f"{who} refused before any change: {why or 'no reason recorded'}; {_stable_serves(record)}.{took}"
        )
    if status == "failed":
        stage = failed_stage(record)
        where = f" at {_stage_label(stage)}" if stage else ""
        return f"{who} failed{where}: {why or 'no reason recorded'}; {_rollback_state(record)}.{took}"
    # planned: a dry run
    refusal = f" The pre-deployment checks would refuse it: {why}." if why else ""
    return f"{who} dry run: would release by {strategy_text(record)}; nothing was changed.{refusal}"


def impact(record: ReleaseRecord) -> str:
    """How much traffic the new version took, and for how long."""
    tag = short_image(record.image)
    if record.status == "promoted":
        return f"{tag} serves 100 % of traffic"
    ran = [s for s in record.stages if s.ran]
    if not ran:
        return "none: no traffic reached the new version"
    peak = max((s.weight for s in ran if s.weight is not None), default=None)
    share = f"up to {peak} % of traffic" if peak is not None else "part of the traffic"
    until = None
    if record.rollback is not None:
        until = record.rollback.finished_at or record.rollback.started_at
    until = until or ran[-1].finished_at or record.finished_at
    exposed = seconds_between(ran[0].started_at, until)
    span = f" for {duration(exposed)}" if exposed is not None else ""
    return f"{tag} took {share}{span}; {_rollback_state(record)}"


def _metric_names(record: ReleaseRecord) -> list[str]:
    names: list[str] = []
    for stage in record.stages:
        for metric in stage.metrics:
            if metric.name not in names:
                names.append(metric.name)
    return names


def next_actions(record: ReleaseRecord | Mapping[str, Any]) -> list[str]:
    """The record's next actions, or sensible ones derived from the outcome when it has none."""
    record = as_record(record)
    if record.next_actions:
        return list(record.next_actions)
    tag, service = short_image(record.image), record.service
    previous = short_image(record.previous_image) if record.previous_image else "the previous version"
    status = record.status
    if status == "promoted":
        watched = ", ".join(_metric_names(record)) or "error rate and latency"
        actions = [f"Watch {watched} of {service} {tag} for the next hour."]
        if record.previous_image:
            actions.append(
                f"If it degrades, release the previous image again: "
                f"python -m opsdag release {service} --image {record.previous_image}"
            )
        return actions
    if status == "rolled_back":
        stage = failed_stage(record)
        bad = [m for m in stage.metrics if m.phase in ("failed", "error")] if stage else []
        actions = [
            f"Investigate {m.name} of {tag} before releasing again: {m.reason or m.phase}." for m in bad
        ]
        if not actions:
            actions.append(
                f"Investigate why {tag} failed before releasing again: {cause(record) or 'see the logs'}."
            )
        actions.append(f"Compare {tag} with {previous} (changes, logs) to find the cause.")
        return actions
    if status == "refused":
        failed_checks = [c for c in record.preflight if c.ok is False]
        actions = [
            f"Fix {c.name}" + (f" ({c.detail})" if c.detail else "") + ", then trigger the release again."
            for c in failed_checks
        ]
        return actions or [f"Read why the request was refused, fix it and trigger {record.dag_id} again."]
    if status == "failed":
        actions = []
        if not (record.rollback is not None and record.rollback.performed) and any(
            s.ran for s in record.stages
        ):
            actions.append(
                f"Check which version of {service} serves traffic now: the run failed and no rollback "
                f"is recorded; roll back to {previous} if {tag} still takes traffic."
            )
        actions.append(f"Read the task logs of {record.dag_id} run {record.run_id or '?'} for the error.")
        return actions
    return [f"Trigger {record.dag_id} again with dry_run off to release {tag}."]


# ---------------------------------------------------------------------------- Markdown


def _cell(text: str) -> str:
    """Text that keeps a Markdown table cell whole."""
    return " ".join(str(text).split()).replace("|", "\\|") or " "


def _inline(text: str) -> str:
    return " ".join(str(text).split())


def _code(text: str | None) -> str:
    return f"`{text}`" if text else NO_DATA


def _when(start: str | None, end: str | None) -> str:
    if not start and not end:
        return ""
    return f"{start or '?'} → {end or '?'}"


def _check_result(ok: bool | None) -> str:
    return {True: "ok", False: "FAILED", None: "not run"}[ok]


def _measurements(m) -> str:
    text = f"{m.passes} pass, {m.failures} fail, {m.inconclusive} inconclusive"
    return text + (f", {m.errors} error" if m.errors else "")


def _stage_title(stage: Stage) -> str:
    parts = [stage.name]
    if stage.weight is not None:
        parts.append(f"{stage.weight} %")
    if stage.bake_s is not None:
        parts[-1] += f" for {duration(stage.bake_s)}"
    title = ": ".join([parts[0], " ".join(parts[1:])]) if len(parts) > 1 else parts[0]
    word = {"passed": "passed", "failed": "FAILED", "running": "INTERRUPTED"}.get(stage.status, stage.status)
    return f"{title}: {word}"


def _render_stage(stage: Stage) -> list[str]:
    lines = [f"### {_stage_title(stage)}", ""]
    when = _when(stage.started_at, stage.finished_at)
    if when:
        lines += [f"{when} ({duration(seconds_between(stage.started_at, stage.finished_at))})", ""]
    if stage.reason:
        lines += [_inline(stage.reason), ""]
    if not stage.metrics:
        lines += ["No metric was judged in this stage.", ""]
        return lines
    lines += [
        "| Metric | Verdict | Last value | Stable baseline | Limit | Measurements | Reason |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in stage.metrics:
        verdict = m.phase.upper() if m.phase in ("failed", "error") else m.phase
        lines.append(
            "| "
            + " | ".join(
                _cell(x)
                for x in (
                    m.name,
                    verdict,
                    number(m.last_value),
                    number(m.baseline),
                    m.limit or NO_DATA,
                    _measurements(m),
                    m.reason,
                )
            )
            + " |"
        )
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
    pending: list[Stage] = []
    for stage in record.stages:
        if stage.status in ("not_run", "skipped"):
            pending.append(stage)
            continue
        lines += _render_stage(stage)
    for status in ("not_run", "skipped"):
        group = [_stage_label(s) for s in pending if s.status == status]
        if group:
            word = "Not run" if status == "not_run" else "Skipped"
            lines += [f"{word}: {', '.join(group)}.", ""]
    return lines


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
        text = ("Passed" if post.ok else "FAILED") + (f": {_inline(post.detail)}" if post.detail else ".")
    return ["## Post-deployment validation", "", text, ""]


def _render_monitoring(record: ReleaseRecord) -> list[str]:
    mon = record.monitoring
    lines = ["## Monitoring", ""]
    if mon.window_s is not None:
        lines += [f"Over {duration(mon.window_s)} of the release, stable and new version together.", ""]
    error_rate = (
        NO_DATA if mon.error_rate is None else f"{number(mon.error_rate)} ({percent(mon.error_rate)})"
    )
    lines += [
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
    return lines


def _render_incidents(record: ReleaseRecord) -> list[str]:
    lines = ["## Incidents and rollback", ""]
    rollback = record.rollback
    if rollback is None or not rollback.performed:
        lines.append(
            "- Rollback: none" + (f" ({_inline(rollback.reason)})" if rollback and rollback.reason else "")
        )
    else:
        lines.append(
            f"- Rollback: performed in {duration(rollback.duration_s)}"
            + (f", {_when(rollback.started_at, rollback.finished_at)}" if rollback.started_at else "")
        )
        if rollback.reason:
            lines.append(f"  - why: {_inline(rollback.reason)}")
        lines.append(f"  - now: {_stable_serves(record)}")
    if record.incidents:
        lines += [f"- Incident: {_inline(i)}" for i in record.incidents]
    else:
        lines.append("- Incidents: none recorded")
    return [*lines, ""]


def render_markdown(record: ReleaseRecord | Mapping[str, Any]) -> str:
    """The whole report as Markdown: outcome first, then checks, stages, validation, figures, actions."""
    record = as_record(record)
    headline = HEADLINES[record.status]
    if record.dry_run and record.status != "planned":
        headline += " (dry run)"
    lines = [f"# Release of {record.service}: {headline}", "", f"**{_inline(summary(record))}**", ""]

    lines += ["## Summary", ""]
    lines += [
        f"- Status: {STATUS_WORDS[record.status]}"
        + (" (dry run)" if record.dry_run and record.status != "planned" else ""),
        f"- Service: {record.service}",
        f"- New image: {_code(record.image)}",
        f"- Stable image before: {_code(record.previous_image)}",
        f"- Strategy: {strategy_text(record)}",
        f"- Duration: {duration(record.duration_s)}"
        + (f" ({_when(record.started_at, record.finished_at)})" if record.started_at else ""),
        f"- Impact: {impact(record)}",
        f"- Reason given: {_inline(record.reason) or 'none'}",
        f"- Run: {_code(record.dag_id)} / {_code(record.run_id or None)}",
        "",
    ]
    lines += ["## Pre-deployment checks", ""]
    if record.preflight:
        lines += ["| Check | Result | Detail |", "|---|---|---|"]
        lines += [
            f"| {_cell(c.name)} | {_check_result(c.ok)} | {_cell(c.detail)} |" for c in record.preflight
        ]
        lines.append("")
    else:
        lines += ["No pre-deployment check was recorded.", ""]
    lines += _render_stages(record)
    lines += _render_post_promotion(record)
    lines += _render_monitoring(record)
    lines += _render_incidents(record)
    lines += ["## Next actions", ""]
    lines += [f"{i}. {_inline(action)}" for i, action in enumerate(next_actions(record), start=1)]
    lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- files


def report_data(record: ReleaseRecord | Mapping[str, Any]) -> dict[str, Any]:
    """The JSON report: the record (next actions resolved), its summary and a format marker.

    ``ReleaseRecord.from_dict`` reads it back (it ignores ``format`` and ``summary``).
    """
    record = as_record(record)
    data = {"format": "opsdag.release-report/1", "summary": summary(record), **record.to_dict()}
    data["next_actions"] = next_actions(record)
    return data


def safe_file_name(name: str) -> str:
    """``name`` usable as one file name: kept as is when made of Airflow's run-id characters.

    Any other character (``/``, ``\\``, spaces, control characters, ``%`` itself) is
    percent-encoded (UTF-8), so distinct names stay distinct and nothing escapes the
    directory; ``.``/``..`` and the empty name are encoded too. A name too long for the
    file system keeps its start and gets a hash of the whole.
    """
    encoded = "".join(ch if ch in _SAFE_CHARS else "".join(f"%{b:02X}" for b in ch.encode()) for ch in name)
    if encoded in ("", ".", ".."):
        encoded = "".join(f"%{b:02X}" for b in name.encode()) or "%00"
    if len(encoded.encode()) > _MAX_NAME_BYTES:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        encoded = f"{encoded[: _MAX_NAME_BYTES - 17]}~{digest}"
    return encoded


class ReportPaths(NamedTuple):
    """The two files of a report; a tuple ``(json, markdown)``, better used by name."""

    json: Path
    markdown: Path


def report_paths(dag_id: str, run_id: str, root: Path | str | None = None) -> ReportPaths:
    """Where a run's report lives: ``<root>/<dag_id>/<run_id>.json`` and ``.md``."""
    if root is None:
        from opsdag.paths import reports_root

        root = reports_root()
    folder = Path(root) / safe_file_name(dag_id)
    name = safe_file_name(run_id)
    return ReportPaths(json=folder / f"{name}.json", markdown=folder / f"{name}.md")


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename; a crash leaves the old file, never half a new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:200]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_report(record: ReleaseRecord | Mapping[str, Any], root: Path | str | None = None) -> ReportPaths:
    """Write the run's JSON and Markdown reports under ``root`` (default: the reports root).

    Returns :class:`ReportPaths` (``.json``, ``.markdown``; as a tuple, JSON first). Both
    are rendered before either is written, so a record that cannot be rendered leaves the
    previous report untouched; the same record written twice gives the same bytes.
    """
    record = as_record(record)
    if not record.run_id:
        raise ValueError(f"release record of {record.service!r} has no run_id: cannot name its report")
    paths = report_paths(record.dag_id, record.run_id, root)
    json_text = json.dumps(report_data(record), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    md_text = render_markdown(record)
    _write_atomically(paths.json, json_text)
    _write_atomically(paths.markdown, md_text)
    return paths

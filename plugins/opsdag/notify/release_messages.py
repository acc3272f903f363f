"""Slack messages of a release (Block Kit): it started, a stage's verdict, the outcome.

The builders are pure: they return ``(text, blocks)``, where ``text`` is the fallback
Slack shows in notifications and ``blocks`` the message. Every verdict carries its
numbers (value, stable baseline, limit), as the report does, and the outcome's text is
the report's summary, so the run's note, the report and Slack say the same thing.
Sending is :mod:`opsdag.notify.notifiers`' job.

What goes in: service, image references, stage and metric figures, the free-text
reason of the request, and links the caller passes. No connection, URL of a webhook or
other secret is ever part of a message. Text from people (the reason) and from tasks is
made plain (control and bidi-override characters dropped) and escaped for Slack's
mrkdwn, so ``<!channel>`` in a reason cannot ping anyone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opsdag.analysis.summary import MetricSummary
from opsdag.format import duration, latency, number, percent, plain_text, rate
from opsdag.reports.release_facts import stage_from_verdict
from opsdag.reports.release_record import ReleaseRecord, StageRecord, as_record
from opsdag.reports.release_wording import (
    HEADLINES,
    PHASE_WORDS,
    clip,
    impact,
    next_actions,
    short_image,
    stage_cause,
    strategy_text,
    summary,
    weights_text,
)

Blocks = list[dict[str, Any]]

# Block Kit limits (https://api.slack.com/reference/block-kit/blocks)
_HEADER_MAX = 150
_SECTION_MAX = 3000
_FIELD_MAX = 2000
_FIELDS_PER_SECTION = 10
_TEXT_MAX = 3000

_STAGE_WORDS = {"passed": "passed", "failed": "FAILED", "running": "interrupted", "not_run": "not run"}


def slack_text(text: Any) -> str:
    """Text safe inside Slack mrkdwn: plain (no control or bidi characters), ``&<>`` escaped as Slack asks."""
    return plain_text(str(text)).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def as_stage(stage: StageRecord | Mapping[str, Any]) -> StageRecord:
    """A stage record, its dict form, or a health gate's ``verdict`` XCom (it names its ``gate``)."""
    if isinstance(stage, StageRecord):
        return stage
    if "gate" in stage:
        return stage_from_verdict(stage)
    return StageRecord.model_validate(stage)


def _header(text: str) -> dict[str, Any]:
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": clip(plain_text(text), _HEADER_MAX), "emoji": False},
    }


def _section(mrkdwn: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(mrkdwn, _SECTION_MAX)}}


def _fields(items: Sequence[str]) -> Blocks:
    """Sections of at most ten mrkdwn fields each."""
    return [
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": clip(item, _FIELD_MAX)}
                for item in items[i : i + _FIELDS_PER_SECTION]
            ],
        }
        for i in range(0, len(items), _FIELDS_PER_SECTION)
    ]


def _context(parts: Sequence[str]) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(" · ".join(parts), _TEXT_MAX)}]}


def _link(url: str | None, label: str) -> str | None:
    if not url:
        return None
    return f"<{url.replace('|', '%7C').replace('>', '%3E')}|{slack_text(label)}>"


def _run_context(dag_id: str | None, run_id: str | None, *links: str | None) -> dict[str, Any] | None:
    parts = [f"`{slack_text(x)}`" for x in (dag_id, run_id) if x]
    parts += [link for link in links if link]
    return _context(parts) if parts else None


def metric_line(metric: MetricSummary) -> str:
    """``error-rate FAILED: 0.081 (stable 0.004), limit max 0.02; 0 pass, 3 fail`` in mrkdwn."""
    value = number(metric.last_value)
    if metric.last_baseline is not None:
        value += f" (stable {number(metric.last_baseline)})"
    counts = f"{metric.passed} pass, {metric.failed} fail"
    if metric.inconclusive:
        counts += f", {metric.inconclusive} inconclusive"
    if metric.errors:
        counts += f", {metric.errors} error"
    verdict = PHASE_WORDS.get(metric.phase, metric.phase)
    return slack_text(f"{metric.metric} {verdict}: {value}, limit {metric.limit or 'none'}; {counts}")


def release_started(
    *,
    service_name: str,
    image: str,
    strategy: str,
    previous_image: str | None = None,
    stages: Sequence[StageRecord | Mapping[str, Any]] = (),
    reason: str = "",
    dry_run: bool = False,
    build: str | None = None,
    dag_id: str | None = None,
    run_id: str | None = None,
    run_url: str | None = None,
) -> tuple[str, Blocks]:
    """The release has begun: what replaces what, how, and why.

    :param service_name: the service's name.
    :param image: the full reference of the new image.
    :param strategy: canary, bluegreen or rolling.
    :param previous_image: the stable image it replaces, if known.
    :param stages: the planned stages (``StageRecord`` or dicts with name, weight, bake_s, status).
    :param reason: the free-text reason of the request.
    :param dry_run: the run plans and reports only.
    :param build: what the run builds the image from (its context and builder), if it does.
    :param dag_id: the release DAG's id, shown in the footer.
    :param run_id: the run's id, shown in the footer.
    :param run_url: a link to the run in the Airflow UI.
    """
    planned = [as_stage(s) for s in stages]
    built_from = f", building it first from {build}" if build else ""
    new, old = short_image(image), short_image(previous_image) if previous_image else None
    how = strategy or "unknown strategy"
    if weights_text(planned):
        how += f": {weights_text(planned)}"
    verb = "dry run of" if dry_run else "releasing"
    text = f"{service_name}: {verb} {new} by {how}" + (f", replacing {old}" if old else "") + built_from + "."
    if reason:
        text += f" Reason: {clip(plain_text(reason), 300)}"

    bakes = {s.bake_s for s in planned if s.bake_s is not None}
    plan = slack_text(how) + (f", {duration(bakes.pop())} each" if len(bakes) == 1 else "")
    lines = [f"*{slack_text(new)}*" + (f" replaces *{slack_text(old)}*" if old else "") + f" by {plan}."]
    if build:
        lines.append(f"Builds the image first from {slack_text(build)}, then deploys the pushed digest.")
    if dry_run:
        lines.append("Dry run: nothing will be changed.")
    if reason:
        lines.append(f"Reason: {slack_text(clip(plain_text(reason), 500))}")
    images = [f"*New image*\n`{slack_text(image)}`"]
    if previous_image:
        images.append(f"*Stable image*\n`{slack_text(previous_image)}`")
    blocks: Blocks = [
        _header(f"{service_name}: {'dry run' if dry_run else 'release'} started"),
        _section("\n".join(lines)),
        *_fields(images),
    ]
    footer = _run_context(dag_id, run_id, _link(run_url, "run in Airflow"))
    if footer:
        blocks.append(footer)
    return slack_text(text), blocks


def stage_verdict(
    *,
    service_name: str,
    image: str | None,
    stage: StageRecord | Mapping[str, Any],
    dag_id: str | None = None,
    run_id: str | None = None,
    run_url: str | None = None,
) -> tuple[str, Blocks]:
    """A stage's gate has spoken: the verdict and, for each metric, the measured values.

    :param service_name: the service's name.
    :param image: the full reference of the new image (None: not named).
    :param stage: the stage (``StageRecord``, its dict form, or a gate's ``verdict`` XCom).
    :param dag_id: the release DAG's id, shown in the footer.
    :param run_id: the run's id, shown in the footer.
    :param run_url: a link to the run in the Airflow UI.
    """
    stage = as_stage(stage)
    word = _STAGE_WORDS.get(stage.status, stage.status)
    who = f"{service_name} {short_image(image)} {stage.label}" if image else f"{service_name} {stage.label}"
    if stage.status in ("failed", "running"):
        detail = stage_cause(stage) or "no reason recorded"
    else:
        detail = ", ".join(
            f"{m.metric} {number(m.last_value)} ({m.limit or 'no limit'})" for m in stage.metrics
        )
        detail = detail or stage.reason or "no metric judged"
    text = f"{who} {word}: {clip(plain_text(detail), 500)}"

    blocks: Blocks = [_section(f"*{slack_text(who)}: {slack_text(word)}*\n{slack_text(clip(detail, 1500))}")]
    if stage.metrics:
        blocks += _fields([metric_line(m) for m in stage.metrics])
    footer = _run_context(dag_id, run_id, _link(run_url, "run in Airflow"))
    if footer:
        blocks.append(footer)
    return slack_text(text), blocks


def release_outcome(
    record: ReleaseRecord | Mapping[str, Any],
    *,
    report_url: str | None = None,
    run_url: str | None = None,
) -> tuple[str, Blocks]:
    """How the release ended: the report's summary, stages, figures and next actions.

    :param record: the release record (typed, or its dict form).
    :param report_url: a link to the report, if it is served somewhere.
    :param run_url: a link to the run in the Airflow UI.
    """
    record = as_record(record)
    line = summary(record)
    mon = record.monitoring
    blocks: Blocks = [
        _header(f"{record.service}: {HEADLINES[record.status].lower()}"),
        _section(slack_text(line)),
    ]
    if record.status != "planned":
        blocks.append(_section(f"*Impact:* {slack_text(impact(record))}"))
    figures = [
        f"*Strategy*\n{slack_text(strategy_text(record))}",
        f"*Duration*\n{duration(record.duration_s)}",
        f"*Error rate*\n{number(mon.error_rate)}",
        f"*Latency p95*\n{latency(mon.latency_p95_s)}",
        f"*Availability*\n{percent(mon.availability)}",
        f"*Throughput*\n{rate(mon.throughput_rps)}",
    ]
    if record.status == "planned":
        figures = figures[:1]
    build = record.build
    if build is not None:
        built = "not rebuilt (pushed before)" if build.cached else f"built in {duration(build.build_seconds)}"
        figures += [f"*Image*\n`{slack_text(build.image)}`", f"*Build*\n{slack_text(build.builder)}, {built}"]
    blocks += _fields(figures)
    if build is not None and build.labels:
        labels = "\n".join(f"{slack_text(k)}: {slack_text(v)}" for k, v in sorted(build.labels.items()))
        blocks.append(_section(f"*Image labels*\n{clip(labels, 2500)}"))
    if record.stages and record.status != "planned":
        stages = " · ".join(
            f"{slack_text(s.name)} {_STAGE_WORDS.get(s.status, s.status)}" for s in record.stages
        )
        blocks.append(_section(f"*Stages:* {stages}"))
    actions = next_actions(record)[:3]
    if actions:
        blocks.append(_section("*Next actions*\n" + "\n".join(f"• {slack_text(a)}" for a in actions)))
    footer = _run_context(
        record.dag_id, record.run_id, _link(report_url, "report"), _link(run_url, "run in Airflow")
    )
    if footer:
        blocks.append(footer)
    return slack_text(line), blocks

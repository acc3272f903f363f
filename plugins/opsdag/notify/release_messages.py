"""Slack messages of a release (Block Kit): it started, a stage's verdict, the outcome.

The builders are pure: they return ``(text, blocks)``, where ``text`` is the fallback
Slack shows in notifications and ``blocks`` the message. Every verdict carries its
numbers (value, stable baseline, limit), as the report does, and the outcome's text is
the report's summary, so the run's note, the report and Slack say the same thing.

What goes in: service, image references, stage and metric figures, the free-text
reason of the request, and links the caller passes. No connection, URL of a webhook or
other secret is ever part of a message. Text from people (the reason) and from metrics
is escaped for Slack's mrkdwn, so ``<!channel>`` in a reason cannot ping anyone.

The ``notify_*`` functions post through :func:`opsdag.notify.slack.send_slack`, which
logs and returns False on any failure: a release never fails because Slack did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opsdag.notify.slack import send_slack
from opsdag.reports.release import (
    HEADLINES,
    duration,
    impact,
    latency,
    next_actions,
    number,
    percent,
    rate,
    short_image,
    stage_cause,
    strategy_text,
    summary,
)
from opsdag.reports.release_record import MetricResult, ReleaseRecord, Stage, as_record, as_stage, as_stages

Blocks = list[dict[str, Any]]

# Block Kit limits (https://api.slack.com/reference/block-kit/blocks)
_HEADER_MAX = 150
_SECTION_MAX = 3000
_FIELD_MAX = 2000
_FIELDS_PER_SECTION = 10
_TEXT_MAX = 3000

_STAGE_WORDS = {"passed": "passed", "failed": "FAILED", "running": "interrupted", "not_run": "not run"}


def escape(text: str) -> str:
    """Text safe inside Slack mrkdwn: ``&``, ``<`` and ``>`` escaped as Slack asks."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _header(text: str) -> dict[str, Any]:
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": _clip(text, _HEADER_MAX), "emoji": False},
    }


def _section(mrkdwn: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(mrkdwn, _SECTION_MAX)}}


def _fields(items: Sequence[str]) -> Blocks:
    """Sections of at most ten mrkdwn fields each."""
    return [
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": _clip(item, _FIELD_MAX)}
                for item in items[i : i + _FIELDS_PER_SECTION]
            ],
        }
        for i in range(0, len(items), _FIELDS_PER_SECTION)
    ]


def _context(parts: Sequence[str]) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(" · ".join(parts), _TEXT_MAX)}]}


def _link(url: str | None, label: str) -> str | None:
    if not url:
        return None
    return f"<{url.replace('|', '%7C').replace('>', '%3E')}|{escape(label)}>"


def _run_context(dag_id: str | None, run_id: str | None, *links: str | None) -> dict[str, Any] | None:
    parts = [f"`{escape(x)}`" for x in (dag_id, run_id) if x]
    parts += [link for link in links if link]
    return _context(parts) if parts else None


def _weights(stages: Sequence[Stage]) -> str:
    weights = [str(s.weight) for s in stages if s.weight is not None]
    return " → ".join(weights) + " %" if weights else ""


def metric_line(metric: MetricResult) -> str:
    """``error-rate FAILED: 0.081 (stable 0.004), limit max 0.02; 0 pass, 3 fail`` in mrkdwn."""
    verdict = metric.phase.upper() if metric.phase in ("failed", "error") else metric.phase
    value = number(metric.last_value)
    if metric.baseline is not None:
        value += f" (stable {number(metric.baseline)})"
    counts = f"{metric.passes} pass, {metric.failures} fail"
    if metric.inconclusive:
        counts += f", {metric.inconclusive} inconclusive"
    if metric.errors:
        counts += f", {metric.errors} error"
    return escape(f"{metric.name} {verdict}: {value}, limit {metric.limit or 'none'}; {counts}")


# ---------------------------------------------------------------------------- builders


def release_started(
    *,
    service: str,
    image: str,
    strategy: str,
    previous_image: str | None = None,
    stages: Sequence[Stage | Mapping[str, Any]] = (),
    reason: str = "",
    dry_run: bool = False,
    dag_id: str | None = None,
    run_id: str | None = None,
    run_url: str | None = None,
) -> tuple[str, Blocks]:
    """The release has begun: what replaces what, how, and why.

    :param service: the service's name.
    :param image: the full reference of the new image.
    :param strategy: canary, bluegreen or rolling.
    :param previous_image: the stable image it replaces, if known.
    :param stages: the planned stages (``Stage`` or dicts with name, weight, bake_s).
    :param reason: the free-text reason of the request.
    :param dry_run: the run plans and reports only.
    :param dag_id: the release DAG's id, shown in the footer.
    :param run_id: the run's id, shown in the footer.
    :param run_url: a link to the run in the Airflow UI.
    """
    planned = as_stages(stages)
    new, old = short_image(image), short_image(previous_image) if previous_image else None
    how = strategy or "unknown strategy"
    if _weights(planned):
        how += f": {_weights(planned)}"
    verb = "dry run of" if dry_run else "releasing"
    text = f"{service}: {verb} {new} by {how}" + (f", replacing {old}" if old else "") + "."
    if reason:
        text += f" Reason: {_clip(reason, 300)}"

    bakes = {s.bake_s for s in planned if s.bake_s is not None}
    plan = escape(how) + (f", {duration(bakes.pop())} each" if len(bakes) == 1 else "")
    lines = [f"*{escape(new)}*" + (f" replaces *{escape(old)}*" if old else "") + f" by {plan}."]
    if dry_run:
        lines.append("Dry run: nothing will be changed.")
    if reason:
        lines.append(f"Reason: {escape(_clip(reason, 500))}")
    blocks: Blocks = [
        _header(f"{service}: {'dry run' if dry_run else 'release'} started"),
        _section("\n".join(lines)),
        *_fields(
            [f"*New image*\n`{escape(image)}`"]
            + ([f"*Stable image*\n`{escape(previous_image)}`"] if previous_image else [])
        ),
    ]
    footer = _run_context(dag_id, run_id, _link(run_url, "run in Airflow"))
    if footer:
        blocks.append(footer)
    return escape(text), blocks


def stage_verdict(
    *,
    service: str,
    image: str | None,
    stage: Stage | Mapping[str, Any],
    dag_id: str | None = None,
    run_id: str | None = None,
    run_url: str | None = None,
) -> tuple[str, Blocks]:
    """A stage's gate has spoken: the verdict and, for each metric, the measured values.

    :param service: the service's name.
    :param image: the full reference of the new image (None: not named).
    :param stage: the stage (``Stage``, its dict form, or a gate's ``verdict`` XCom) with its metrics.
    :param dag_id: the release DAG's id, shown in the footer.
    :param run_id: the run's id, shown in the footer.
    :param run_url: a link to the run in the Airflow UI.
    """
    stage = as_stage(stage)
    label = f"{stage.name} ({stage.weight} %)" if stage.weight is not None else stage.name
    word = _STAGE_WORDS.get(stage.status, stage.status)
    who = f"{service} {short_image(image)} {label}" if image else f"{service} {label}"
    if stage.status in ("failed", "running"):
        detail = stage_cause(stage) or "no reason recorded"
    else:
        detail = ", ".join(
            f"{m.name} {number(m.last_value)} ({m.limit or 'no limit'})" for m in stage.metrics
        )
        detail = detail or stage.reason or "no metric judged"
    text = f"{who} {word}: {_clip(detail, 500)}"

    blocks: Blocks = [_section(f"*{escape(who)}: {escape(word)}*\n{escape(_clip(detail, 1500))}")]
    if stage.metrics:
        blocks += _fields([metric_line(m) for m in stage.metrics])
    footer = _run_context(dag_id, run_id, _link(run_url, "run in Airflow"))
    if footer:
        blocks.append(footer)
    return escape(text), blocks


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
        _section(escape(line)),
    ]
    if record.status != "planned":
        blocks.append(_section(f"*Impact:* {escape(impact(record))}"))
    figures = [
        f"*Strategy*\n{escape(strategy_text(record))}",
        f"*Duration*\n{duration(record.duration_s)}",
        f"*Error rate*\n{number(mon.error_rate)}",
        f"*Latency p95*\n{latency(mon.latency_p95_s)}",
        f"*Availability*\n{percent(mon.availability)}",
        f"*Throughput*\n{rate(mon.throughput_rps)}",
    ]
    if record.status == "planned":
        figures = figures[:1]
    blocks += _fields(figures)
    if record.stages and record.status != "planned":
        stages = " · ".join(f"{escape(s.name)} {_STAGE_WORDS.get(s.status, s.status)}" for s in record.stages)
        blocks.append(_section(f"*Stages:* {stages}"))
    actions = next_actions(record)[:3]
    if actions:
        blocks.append(_section("*Next actions*\n" + "\n".join(f"• {escape(a)}" for a in actions)))
    footer = _run_context(
        record.dag_id, record.run_id, _link(report_url, "report"), _link(run_url, "run in Airflow")
    )
    if footer:
        blocks.append(footer)
    return escape(line), blocks


# ---------------------------------------------------------------------------- senders

# Where to send: an Airflow connection id, or a service spec whose notifications.slack
# gives the connection and the channel (None, or a spec without Slack: not sent).
SlackTarget = Any


def slack_target(
    target: SlackTarget, channel: str | None = None
) -> tuple[str | None, str | None, str | None]:
    """``(conn_id, channel, service name)`` of a connection id or a service spec (duck-typed)."""
    if target is None or isinstance(target, str):
        return target, channel, None
    slack = getattr(getattr(target, "notifications", None), "slack", None)
    name = getattr(target, "name", None)
    if slack is None:
        return None, channel, name
    return slack.connection_id, channel or slack.channel, name


def notify_release_started(
    target: SlackTarget,
    *,
    image: str,
    strategy: str,
    service: str | None = None,
    previous_image: str | None = None,
    stages: Sequence[Stage | Mapping[str, Any]] = (),
    reason: str = "",
    dry_run: bool = False,
    channel: str | None = None,
    dag_id: str | None = None,
    run_id: str | None = None,
    run_url: str | None = None,
) -> bool:
    """Post :func:`release_started`; True when Slack took it.

    ``target`` is a connection id or a service spec; ``service`` defaults to the spec's name.
    """
    conn_id, channel, name = slack_target(target, channel)
    text, blocks = release_started(
        service=service or name or "?",
        image=image,
        strategy=strategy,
        previous_image=previous_image,
        stages=stages,
        reason=reason,
        dry_run=dry_run,
        dag_id=dag_id,
        run_id=run_id,
        run_url=run_url,
    )
    return send_slack(conn_id, text, blocks=blocks, channel=channel)


def notify_stage_verdict(
    target: SlackTarget,
    stage: Stage | Mapping[str, Any],
    *,
    service: str | None = None,
    image: str | None = None,
    channel: str | None = None,
    dag_id: str | None = None,
    run_id: str | None = None,
    run_url: str | None = None,
) -> bool:
    """Post :func:`stage_verdict` (``stage`` may be a gate's ``verdict`` XCom); True when Slack took it."""
    conn_id, channel, name = slack_target(target, channel)
    text, blocks = stage_verdict(
        service=service or name or "?",
        image=image,
        stage=stage,
        dag_id=dag_id,
        run_id=run_id,
        run_url=run_url,
    )
    return send_slack(conn_id, text, blocks=blocks, channel=channel)


def notify_release_outcome(
    target: SlackTarget,
    record: ReleaseRecord | Mapping[str, Any],
    *,
    channel: str | None = None,
    report_url: str | None = None,
    run_url: str | None = None,
) -> bool:
    """Post :func:`release_outcome` to ``target`` (connection id or service spec); True if Slack took it."""
    conn_id, channel, _ = slack_target(target, channel)
    text, blocks = release_outcome(record, report_url=report_url, run_url=run_url)
    return send_slack(conn_id, text, blocks=blocks, channel=channel)

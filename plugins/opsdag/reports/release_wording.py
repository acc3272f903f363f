"""A release record in words: its summary line, cause, impact and next actions (pure functions).

Written for someone woken at 3 a.m.: the outcome first, then why, with the numbers, in
the manner of Argo Rollouts ("error-rate 0.081 > max 0.02"). The advice follows from the
cause: a canary measured bad is investigated; a canary that could not be measured (no
data: Prometheus down) sends you to Prometheus; a step that failed on its own (a task
killed, a platform error) sends you to that step's log. The text is plain (control and
bidirectional-override characters dropped); each renderer escapes it for its markup.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opsdag.analysis.summary import MetricSummary
from opsdag.format import duration, plain_text
from opsdag.reports.release_record import FailedStep, ReleaseRecord, StageRecord, as_record, seconds_between

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
# A metric's phase in a report or a message: failures shout, the rest reads quietly.
PHASE_WORDS = {"pass": "passed", "fail": "FAILED", "error": "ERROR", "running": "running"}
SUMMARY_MAX = 1000  # Airflow's DagRunNote.content is String(1000)
NO_DATA_PREFIX = "no data"  # how the judge and the gate start every reason about missing data
_AIRFLOW_WRAPPERS = ("AirflowFailException: ", "AirflowException: ", "AirflowTaskTimeout: ")


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


def weights_text(stages: tuple[StageRecord, ...] | list[StageRecord]) -> str:
    """``10 → 25 → 50 → 100 %``."""
    weights = [str(s.weight) for s in stages if s.weight is not None]
    return " → ".join(weights) + " %" if weights else ""


def strategy_text(record: ReleaseRecord) -> str:
    """``canary, 4 stages: 10 → 25 → 50 → 100 %``."""
    text = record.strategy or "unknown strategy"
    if record.stages:
        count = len(record.stages)
        text += f", {count} stage{'s' if count != 1 else ''}"
        weights = weights_text(record.stages)
        if weights:
            text += f": {weights}"
    return text


def failed_stage(record: ReleaseRecord) -> StageRecord | None:
    """The stage where the release stopped: the first that failed (or was interrupted)."""
    return next((s for s in record.stages if s.status in ("failed", "running")), None)


def failing_metrics(stage: StageRecord | None) -> list[MetricSummary]:
    return [m for m in stage.metrics if m.phase in ("fail", "error")] if stage else []


def stage_cause(stage: StageRecord) -> str:
    """Why a stage failed, in words with numbers: the failing metrics' reasons, else the stage's."""
    bad = [m.reason or f"{m.metric} {m.phase}" for m in failing_metrics(stage)]
    return "; ".join(bad) if bad else stage.reason


def error_text(error: str | None) -> str:
    """A recorded error for people: one line, without Airflow's exception class in front."""
    text = plain_text(error)
    for wrapper in _AIRFLOW_WRAPPERS:
        text = text.removeprefix(wrapper)
    return " ".join(text.split()) or "no error recorded"


def step_failure(failure: FailedStep) -> str:
    """``stage_25.set_weight: the task failed without recording an error (...)``."""
    return f"{failure.task_id}: {error_text(failure.error)}"


def cause(record: ReleaseRecord) -> str:
    """The reason the release did not go through (empty when it did)."""
    if record.status == "promoted":
        return ""
    stage = failed_stage(record)
    if stage is not None and stage_cause(stage):
        return stage_cause(stage)
    failed_checks = [c for c in record.preflight.checks if c.ok is False]
    if failed_checks:
        return "; ".join(
            f"pre-deployment check {c.name} failed" + (f": {c.detail}" if c.detail else "")
            for c in failed_checks
        )
    if record.post_promotion.ok is False:
        detail = record.post_promotion.detail
        return "post-deployment validation failed" + (f": {detail}" if detail else "")
    if record.failure is not None:
        return step_failure(record.failure)
    if record.rollback is not None and record.rollback.reason:
        return record.rollback.reason
    return ""


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def stable_serves(record: ReleaseRecord) -> str:
    if record.previous_image:
        return f"stable {short_image(record.previous_image)} serves 100 %"
    return "the stable version serves 100 %"


def _rollback_state(record: ReleaseRecord) -> str:
    if record.rollback is not None and record.rollback.performed:
        return f"rolled back, {stable_serves(record)}"
    if not any(s.ran for s in record.stages):
        return f"nothing was changed, {stable_serves(record)}"
    return "no rollback recorded: check which version serves traffic"


def summary(record: ReleaseRecord | Mapping[str, Any]) -> str:
    """One line for the DAG run's note and for Slack.

    ``demo-api 1.2.0-errors rolled back at stage_10 (10 %): error-rate 0.081 > max 0.02;
    stable 1.0.0 serves 100 %. 41 s.`` At most :data:`SUMMARY_MAX` characters: Airflow
    keeps a run's note in a ``String(1000)`` column.
    """
    return clip(plain_text(_summary(as_record(record))), SUMMARY_MAX)


def _summary(record: ReleaseRecord) -> str:
    who = f"{record.service} {short_image(record.image)}"
    why = clip(cause(record), 300) or "no reason recorded"
    took = f" {duration(record.duration_s)}." if record.duration_s is not None else ""
    stage = failed_stage(record)
    where = f" at {stage.label}" if stage else ""
    status = record.status
    if status == "promoted":
        ran = [s for s in record.stages if s.status == "passed"]
        n = len(ran)
        after = f" after {n} stage{'s' if n != 1 else ''} ({weights_text(ran)})" if ran else ""
        gates = ", every gate passed" if ran else ""
        return f"{who} promoted: serves 100 %{after}{gates}.{took}"
    if status == "rolled_back":
        return f"{who} rolled back{where}: {why}; {stable_serves(record)}.{took}"
    if status == "refused":
        return f"{who} refused before any change: {why}; {stable_serves(record)}.{took}"
    if status == "failed" and record.failure is not None and record.failure.task_id == "build":
        return f"{who} failed at the image build, before any change: {why}; {stable_serves(record)}.{took}"
    if status == "failed":
        return f"{who} failed{where}: {why}; {_rollback_state(record)}.{took}"
    refusal = cause(record)  # planned: a dry run
    refusal = f" The pre-deployment checks would refuse it: {clip(refusal, 300)}." if refusal else ""
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
    return list(dict.fromkeys(m.metric for stage in record.stages for m in stage.metrics))


def check_prometheus(record: ReleaseRecord) -> str:
    """The advice when the canary could not be measured: the fault is in the measuring."""
    conn = f" (connection {record.prometheus_conn_id})" if record.prometheus_conn_id else ""
    return (
        f"Check Prometheus{conn}: {short_image(record.image)} could not be measured, so it was rolled "
        "back for lack of data, not for a measured fault; release it again once Prometheus answers queries."
    )


def _rolled_back_actions(record: ReleaseRecord) -> list[str]:
    tag = short_image(record.image)
    previous = short_image(record.previous_image) if record.previous_image else "the previous version"
    stage = failed_stage(record)
    bad = failing_metrics(stage)
    # The gate could not query Prometheus at all, or metrics failed for want of data.
    lacked_data = any(m.lacks_data for m in bad) or (
        stage is not None and not bad and stage.reason.startswith(NO_DATA_PREFIX)
    )
    actions: list[str] = []
    measured_bad = False
    for m in bad:
        if m.lacks_data:
            continue
        if m.phase == "error":
            actions.append(f"Fix the query of {m.metric} in {record.service}'s analysis: {m.reason}.")
        else:
            measured_bad = True
            actions.append(f"Investigate {m.metric} of {tag} before releasing again: {m.reason or m.phase}.")
    if lacked_data:
        actions.append(check_prometheus(record))
    failure = record.failure
    if not actions and failure is not None and not failure.task_id.endswith(".deploy"):
        # A step failed on its own (a task killed, a platform or router error): not a verdict on the version.
        actions.append(
            f"Read the log of task {failure.task_id} in run {record.run_id or '?'}: "
            f"{error_text(failure.error)}. Fix what made it fail, then run the release again."
        )
    if not actions:
        measured_bad = True
        actions.append(
            f"Investigate why {tag} failed before releasing again: {cause(record) or 'see the logs'}."
        )
    if measured_bad:
        actions.append(f"Compare {tag} with {previous} (changes, logs) to find the cause.")
    return actions


def next_actions(record: ReleaseRecord | Mapping[str, Any]) -> list[str]:
    """The record's next actions, or the ones that follow from its outcome and cause when it has none."""
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
        return _rolled_back_actions(record)
    if status == "refused":
        failed_checks = [c for c in record.preflight.checks if c.ok is False]
        actions = [
            f"Fix {c.name}" + (f" ({c.detail})" if c.detail else "") + ", then trigger the release again."
            for c in failed_checks
        ]
        if not actions and record.failure is not None:
            actions.append(
                f"Fix the request ({error_text(record.failure.error)}) and trigger {record.dag_id} again."
            )
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
        if record.failure is not None:
            actions.append(
                f"Read the log of task {record.failure.task_id} in run {record.run_id or '?'}: "
                f"{error_text(record.failure.error)}."
            )
        else:
            actions.append(f"Read the task logs of {record.dag_id} run {record.run_id or '?'} for the error.")
        return actions
    return [f"Trigger {record.dag_id} again with dry_run off to release {tag}."]

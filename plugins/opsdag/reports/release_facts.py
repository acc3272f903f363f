"""From what a release run's tasks recorded to its record: status, stages, rollback, incidents.

The report task gathers the XComs and task states of its run into :class:`ReleaseFacts`
and calls :func:`build_record`; every decision about what happened is made here, in pure
functions tested without Airflow. The first failing step comes from
:func:`opsdag.operators.run_state.first_failure` over the strategy's task ids (run
order), so a step that fails on its own (a task killed in ``set_weight``, ``promote``
raising) is named with its own error, never with the canary's health message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opsdag.analysis.preflight_checks import preflight_passed
from opsdag.analysis.summary import MetricSummary
from opsdag.format import plain_text
from opsdag.reports.release_record import FailedStep, ReleaseRecord, StageRecord, Status, read_time
from opsdag.reports.release_wording import error_text, stage_cause, step_failure
from opsdag.spec.service import ServiceSpec
from opsdag.strategies.stages import StagePlan, stage_plans

# A gate's verdict phase -> the stage's status (fail, error and inconclusive all stop the release).
_STAGE_STATUS = {"pass": "passed", "running": "running"}
# Steps before anything changes on the platform: their failure is not an incident.
_REFUSING_STEPS = ("validate_request", "build", "preflight")
BUILD_STEP = "build"


@dataclass(frozen=True)
class ReleaseFacts:
    """What the tasks of one release run recorded (XComs, states), as the report task reads them.

    :param failure: ``(task id, error)`` of the first failing task, from ``first_failure``.
    :param rollback_error: the rollback task's own recorded error, if it failed.
    :param monitoring: figures read from Prometheus over the release (None: no data).
    """

    service: ServiceSpec
    dag_id: str
    run_id: str
    started_at: datetime
    finished_at: datetime
    params: Mapping[str, Any] = field(default_factory=dict)
    request: Mapping[str, Any] | None = None
    preflight: Mapping[str, Any] | None = None
    readiness: Mapping[str, Any] | None = None
    verdicts: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)
    # a weight task -> the split it gave in words, when not the one asked (a replica ratio)
    splits: Mapping[str, str | None] = field(default_factory=dict)
    states: Mapping[str, str] = field(default_factory=dict)
    rollback: Mapping[str, Any] | None = None
    post_promotion: Mapping[str, Any] | None = None
    failure: tuple[str | None, str | None] = (None, None)
    rollback_error: str | None = None
    monitoring: Mapping[str, float | None] = field(default_factory=dict)


def release_status(
    *,
    dry_run: bool,
    request: Mapping[str, Any] | None,
    preflight: Mapping[str, Any] | None,
    rollback: Mapping[str, Any] | None,
    post_promotion: Mapping[str, Any] | None,
    failed_task: str | None = None,
) -> Status:
    """How the release ended: planned (dry run), refused, rolled back, promoted, or failed.

    A build that failed is a failure (the request was valid), though nothing changed.
    """
    if dry_run and request:
        return "planned"
    if failed_task == BUILD_STEP:
        return "failed"
    if not request or not preflight_passed(dict(preflight or {})):
        return "refused"
    if rollback and rollback.get("performed"):
        return "rolled_back"
    if post_promotion and post_promotion.get("ok"):
        return "promoted"
    return "failed"


def stage_from_verdict(
    verdict: Mapping[str, Any], *, weight: int | None = None, bake_s: float | None = None
) -> StageRecord:
    """A stage as its health gate judged it (the gate's ``verdict`` XCom)."""
    return StageRecord(
        name=verdict["gate"],
        status=_STAGE_STATUS.get(str(verdict.get("phase")), "failed"),
        weight=verdict.get("weight", weight),
        bake_s=bake_s,
        reason=verdict.get("reason", ""),
        started_at=read_time(verdict.get("started_at")),
        finished_at=read_time(verdict.get("decided_at")),
        metrics=tuple(MetricSummary.from_dict(m) for m in verdict.get("metrics") or ()),
    )


def stage_record(
    plan: StagePlan,
    verdict: Mapping[str, Any] | None,
    gate_state: str | None,
    failure: FailedStep | None,
) -> StageRecord:
    """One stage: as its gate judged it; failed when its weight change failed; else skipped or not run.

    A rejected approval leaves the stage unrun (no traffic moved): the failure itself
    names the approval task.
    """
    name, bake_s = plan.name, plan.bake.total_seconds()
    if verdict:
        return stage_from_verdict(verdict, weight=plan.weight, bake_s=bake_s)
    base = {"name": name, "weight": plan.weight, "bake_s": bake_s}
    if failure is not None and failure.task_id in (plan.move_task, plan.gate_task):
        return StageRecord(**base, status="failed", reason=step_failure(failure))
    if gate_state == "skipped":
        reason = "skipped: an earlier step failed or the run was a dry run"
        return StageRecord(**base, status="skipped", reason=reason)
    return StageRecord(**base, status="not_run", reason="not reached")


def said_split(stage: StageRecord, said: str | None) -> StageRecord:
    """The stage with the split its weight task gave, when not the one asked, before its reason."""
    if not said or not stage.ran:
        return stage
    return stage.model_copy(update={"reason": f"{said}; {stage.reason}" if stage.reason else said})


def rollback_record(rollback: Mapping[str, Any] | None, reason: str) -> dict[str, Any] | None:
    """The rollback task's XCom (epoch times) with the reason the release was rolled back."""
    if not rollback:
        return None
    times = {k: read_time(rollback.get(k)) for k in ("started_at", "finished_at")}
    return {"performed": True, "reason": reason, **times, "duration_s": rollback.get("duration_s")}


def incidents(
    readiness: Mapping[str, Any] | None,
    stages: Sequence[StageRecord],
    failure: FailedStep | None,
    rollback_error: str | None,
) -> list[str]:
    """What went wrong while the release was changing things, each with its own words."""
    found = []
    canary_failed = bool(readiness) and readiness.get("status") in ("failed", "timeout")
    if canary_failed:
        found.append(f"canary {readiness.get('status')}: {readiness.get('reason')}")
    failed = next((s for s in stages if s.status == "failed"), None)
    if failed is not None:
        found.append(f"{failed.name} failed: {stage_cause(failed)}")
    if failure is not None and failure.task_id not in _REFUSING_STEPS:
        in_failed_stage = failed is not None and f".{failed.name}." in f".{failure.task_id}"
        in_failed_canary = canary_failed and failure.task_id.endswith(".deploy")
        if not (in_failed_stage or in_failed_canary):  # else already said above, with its numbers
            found.append(f"{failure.task_id} failed: {error_text(failure.error)}")
    if rollback_error:
        found.append(f"rollback failed: {error_text(rollback_error)}")
    return found


def facts_strategy(facts: ReleaseFacts) -> str:
    """The strategy the run took: the resolved request's, else what was asked, else the spec's default."""
    request = facts.request or {}
    return request.get("strategy") or facts.params.get("strategy") or facts.service.strategy


def build_record(facts: ReleaseFacts) -> ReleaseRecord:
    """The release record of one run, from what its tasks recorded."""
    service, params = facts.service, facts.params
    request = dict(facts.request or {})
    task_id, error = facts.failure
    failure = FailedStep(task_id=task_id, error=error or "") if task_id else None
    strategy = facts_strategy(facts)
    stages = [
        stage_record(plan, facts.verdicts.get(plan.gate_task), facts.states.get(plan.gate_task), failure)
        for plan in stage_plans(service, strategy)
    ]
    stages = [
        said_split(stage, facts.splits.get(plan.move_task))
        for stage, plan in zip(stages, stage_plans(service, strategy), strict=True)
    ]
    failed = next((s for s in stages if s.status == "failed"), None)
    why = stage_cause(failed) if failed else step_failure(failure) if failure else "a release step failed"
    status = release_status(
        dry_run=bool(params.get("dry_run")),
        request=facts.request,
        preflight=facts.preflight,
        rollback=facts.rollback,
        post_promotion=facts.post_promotion,
        failed_task=task_id,
    )
    preflight = dict(facts.preflight or {})
    built = request.get("build")
    duration = (facts.finished_at - facts.started_at).total_seconds()
    return ReleaseRecord.model_validate(
        {
            "service": service.name,
            "dag_id": facts.dag_id,
            "run_id": facts.run_id,
            "image": plain_text(request.get("image") or params.get("image")),
            "previous_image": preflight.get("stable_image"),
            "build": built if isinstance(built, Mapping) else None,
            "strategy": strategy,
            "reason": plain_text(request.get("reason") or params.get("reason")),
            "dry_run": bool(params.get("dry_run")),
            "status": status,
            "started_at": facts.started_at.isoformat(),
            "finished_at": facts.finished_at.isoformat(),
            "duration_s": round(duration, 1),
            "prometheus_conn_id": service.analysis.prometheus_conn_id,
            "preflight": {"checks": preflight.get("checks", [])},
            "stages": stages,
            "post_promotion": facts.post_promotion or {"ok": None, "detail": "not run"},
            "monitoring": dict(facts.monitoring),
            "rollback": rollback_record(facts.rollback, why),
            "failure": failure,
            "incidents": incidents(facts.readiness, stages, failure, facts.rollback_error),
        }
    )

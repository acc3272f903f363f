"""The stages of each strategy, as plain data: what the DAG builds and what the report reads back.

A stage is one health gate and what moves traffic before it (a weight, a switch, a
batch of replaced instances), with the task ids the release DAG gives them. The DAG
builders in this package and the release report both read these plans, so the report
never guesses task ids. Pure: no Airflow import.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from opsdag.platforms.weights import rolling_plan
from opsdag.spec.service import ServiceSpec

# Tasks outside the strategy groups, in run order around them.
BEFORE = ("validate_request", "build", "preflight", "strategy")
AFTER = ("promote", "post_promotion_check", "rollback")


@dataclass(frozen=True)
class StagePlan:
    """One gate of a strategy and the step that moves traffic before it.

    :param name: the stage's name in reports and messages (``stage_25``, ``preview``, ``batch_2``).
    :param weight: the new version's share of the traffic while it is judged, in percent.
    :param move_task: the task that moves traffic (or instances) before the gate.
    :param approval_task: the task asking a person first, if the stage needs approval.
    :param abort: what the gate's trigger does to traffic when the verdict fails.
    """

    name: str
    weight: int
    bake: timedelta
    gate_task: str
    move_task: str
    approval_task: str | None = None
    abort: str = "weight_zero"
    canary_instances: int | None = None
    stable_instances: int | None = None


def canary_stages(spec: ServiceSpec) -> list[StagePlan]:
    steps = spec.canary.steps if spec.canary else []
    return [
        StagePlan(
            name=f"stage_{s.weight}",
            weight=s.weight,
            bake=s.bake,
            gate_task=f"canary.stage_{s.weight}.gate",
            move_task=f"canary.stage_{s.weight}.set_weight",
            approval_task=f"canary.stage_{s.weight}.approval" if s.approval else None,
        )
        for s in steps
    ]


def bluegreen_stages(spec: ServiceSpec) -> list[StagePlan]:
    bg = spec.bluegreen
    if bg is None:
        return []
    return [
        StagePlan(
            name="preview",
            weight=0,
            bake=bg.pre_promotion_bake,
            gate_task="bluegreen.preview.gate",
            move_task="bluegreen.preview.open",
            abort="preview_off",
        ),
        StagePlan(
            name="active",
            weight=100,
            bake=bg.post_promotion_bake,
            gate_task="bluegreen.active.gate",
            move_task="bluegreen.active.switch",
            approval_task="bluegreen.active.approval" if bg.approval else None,
            abort="switch_back",
        ),
    ]


def rolling_stages(spec: ServiceSpec) -> list[StagePlan]:
    rolling = spec.rolling
    if rolling is None:
        return []
    batches = rolling_plan(spec.instances() or 1, rolling.max_surge, rolling.max_unavailable)
    return [
        StagePlan(
            name=f"batch_{i}",
            weight=batch.weight,
            bake=rolling.bake,
            gate_task=f"rolling.batch_{i}.gate",
            move_task=f"rolling.batch_{i}.replace",
            canary_instances=batch.canary,
            stable_instances=batch.stable,
        )
        for i, batch in enumerate(batches, start=1)
    ]


_PLANS = {"canary": canary_stages, "bluegreen": bluegreen_stages, "rolling": rolling_stages}
# Tasks of a strategy's group before its first stage, and after its last one.
_LEAD = {name: (f"{name}.deploy", f"{name}.smoke") for name in _PLANS}
_TAIL = {"bluegreen": ("bluegreen.scale_down_delay",)}


def stage_plans(spec: ServiceSpec, strategy: str) -> list[StagePlan]:
    """The stages a release of ``spec`` with ``strategy`` goes through, in order."""
    return _PLANS[strategy](spec)


def lead_tasks(strategy: str) -> tuple[str, ...]:
    """The group's tasks that start the new version (no traffic yet) and smoke-test it."""
    return _LEAD[strategy]


def release_task_ids(spec: ServiceSpec, strategy: str) -> list[str]:
    """The release DAG's task ids that can fail, in run order, for a run of ``strategy``."""
    ids = [*BEFORE, *lead_tasks(strategy)]
    for stage in stage_plans(spec, strategy):
        ids += [t for t in (stage.approval_task, stage.move_task, stage.gate_task) if t]
    return [*ids, *_TAIL.get(strategy, ()), *AFTER]


def peak_instances(spec: ServiceSpec, strategy: str, stable_now: int) -> int:
    """The most instances of both versions that run at once during a release (for capacity)."""
    if strategy == "rolling":
        return max((s.canary_instances or 0) + (s.stable_instances or 0) for s in stage_plans(spec, strategy))
    return stable_now + (spec.instances() or stable_now)

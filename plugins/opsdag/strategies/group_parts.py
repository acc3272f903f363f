"""The pieces every strategy's task group is made of: start the new version, smoke it, and a stage
(an optional approval, the step that moves traffic, the health gate that judges it).

Stage tasks run with trigger rule all_done and skip themselves when the run failed, when
the run chose another strategy, or in a dry run (``ServiceOperator.skip_unless_moving``):
the stages after a failure show as skipped, not upstream_failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from airflow.sdk import BaseOperator, TaskGroup, TriggerRule

from opsdag.notify.notifiers import StageVerdictNotifier
from opsdag.operators.gate import HealthGateOperator
from opsdag.operators.service_base import IMAGE
from opsdag.operators.smoke import SmokeCheckOperator
from opsdag.operators.stage_approval import StageApprovalOperator
from opsdag.operators.workload import StartVersionOperator
from opsdag.spec.service import ServiceSpec
from opsdag.strategies.stages import StagePlan

AFTER_PREVIOUS = TriggerRule.ALL_DONE
APPROVAL_TIMEOUT = timedelta(hours=1)
# Deferred tasks retry once: Airflow 3.3 can fail a task as it resumes from its trigger
# (the executor and the task instance disagree on its state) although nothing went wrong.
# A real verdict or a version that never gets ready fails with AirflowFailException, which
# is never retried; a retry judges a fresh window (every step here is idempotent).
DEFERRED_RETRY = {"retries": 1, "retry_delay": timedelta(seconds=2)}


def selectors_of(strategy: str) -> str:
    """The new version's metric selectors, pushed by the group's ``deploy`` task once it runs."""
    return f"{{{{ ti.xcom_pull(task_ids='{strategy}.deploy', key='selectors') }}}}"


@dataclass
class GroupTasks:
    """A strategy group's first and last tasks, and every task that moves traffic or instances."""

    first: BaseOperator
    last: BaseOperator
    moving: list[BaseOperator] = field(default_factory=list)


def start_and_smoke(spec: ServiceSpec, strategy: str, instances: int | None) -> GroupTasks:
    """``<strategy>.deploy`` (new version at 0 %, deferred until ready) then ``<strategy>.smoke``."""
    deploy = StartVersionOperator(
        task_id="deploy",
        service=spec,
        strategy=strategy,
        image=IMAGE,
        instances=instances,
        trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
        **DEFERRED_RETRY,
    )
    smoke = SmokeCheckOperator(task_id="smoke", service=spec, strategy=strategy, track="canary")
    deploy >> smoke
    return GroupTasks(first=deploy, last=smoke, moving=[deploy, smoke])


def stage(
    spec: ServiceSpec,
    strategy: str,
    plan: StagePlan,
    move: BaseOperator,
    waiting_weight: int = 0,
    waiting_abort: str = "weight_zero",
) -> GroupTasks:
    """One stage in its own task group: [approval >>] ``move`` >> gate.

    ``move`` is built by the caller with ``task_id`` equal to the last part of
    ``plan.move_task`` inside this group's context. ``waiting_weight``: the new version's
    share of the traffic while a person decides (the previous stage's, or blue-green's
    preview share); above 0 it keeps being judged meanwhile, and a failing verdict takes its
    traffic away at once (``waiting_abort``).
    """
    first: BaseOperator = move
    moving = [move]
    if plan.approval_task:
        approval = StageApprovalOperator(
            task_id="approval",
            service=spec,
            subject=f"Release {spec.name}: {plan.name} ({plan.weight} % of the traffic to {IMAGE})?",
            body="Approve to continue; reject to roll the release back.",
            response_timeout=APPROVAL_TIMEOUT,
            current_weight=waiting_weight,
            selectors=selectors_of(strategy) if waiting_weight else None,
            abort_action=waiting_abort if waiting_weight else None,
            trigger_rule=AFTER_PREVIOUS,
        )
        move.trigger_rule = TriggerRule.ALL_SUCCESS
        approval >> move
        first = approval
        moving.insert(0, approval)
    else:
        move.trigger_rule = AFTER_PREVIOUS
    gate = HealthGateOperator(
        task_id="gate",
        service=spec,
        weight=plan.weight,
        bake=plan.bake,
        selectors=selectors_of(strategy),
        gate_name=plan.name,
        abort_action=plan.abort,
        on_success_callback=StageVerdictNotifier(service=spec),
        on_failure_callback=StageVerdictNotifier(service=spec),
        **DEFERRED_RETRY,
    )
    move >> gate
    moving.append(gate)
    return GroupTasks(first=first, last=gate, moving=moving)


def chain_stages(lead: GroupTasks, stages: list[GroupTasks]) -> GroupTasks:
    """``lead`` then each stage in order; one GroupTasks for the whole strategy."""
    previous, moving = lead.last, list(lead.moving)
    for s in stages:
        previous >> s.first
        previous = s.last
        moving += s.moving
    return GroupTasks(first=lead.first, last=previous, moving=moving)


def stage_group(plan: StagePlan) -> TaskGroup:
    """The task group of one stage (``canary.stage_25``, ``bluegreen.active``, ``rolling.batch_2``)."""
    return TaskGroup(group_id=plan.move_task.split(".")[1], tooltip=f"{plan.weight} % for {plan.bake}")

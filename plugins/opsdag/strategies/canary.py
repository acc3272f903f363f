"""Canary: the new version at 0 %, then each step's weight, judged for its bake, up to 100 %."""

from __future__ import annotations

from airflow.sdk import TaskGroup

from opsdag.operators.traffic import SetWeightOperator
from opsdag.spec.service import ServiceSpec
from opsdag.strategies.group_parts import GroupTasks, chain_stages, stage, stage_group, start_and_smoke
from opsdag.strategies.stages import canary_stages

NAME = "canary"


def canary_group(spec: ServiceSpec) -> GroupTasks:
    """deploy >> smoke >> stage_<w> (set_weight >> gate) for every step."""
    with TaskGroup(group_id=NAME, tooltip="canary: traffic in steps, each judged"):
        lead = start_and_smoke(spec, NAME, spec.instances())
        stages, weight_before = [], 0
        for plan in canary_stages(spec):
            with stage_group(plan):
                move = SetWeightOperator(
                    task_id="set_weight", service=spec, strategy=NAME, weight=plan.weight
                )
                stages.append(stage(spec, NAME, plan, move, waiting_weight=weight_before))
            weight_before = plan.weight
        return chain_stages(lead, stages)

"""Rolling: instances replaced in batches (max_surge, max_unavailable), a gate after each batch.

deploy (the first batch's new instances, at 0 %) >> smoke >> batch_<i> (replace: the new
version up, the old down, the split to match >> gate). The last old instance stays until
the last gate passed, so an abort always has somewhere to send traffic; promote removes it.

On a platform that rolls in place (Kubernetes: ``WorkloadDriver.rolls_in_place``) the same
tasks roll the serving Deployment itself: ``deploy`` is the first batch, each ``replace``
lets the controller go on to the batch's count and holds it there (``spec.paused``), the
split is the ready-replica ratio, and promote lets the rollout finish. The batches are
planned for ``platform.replicas`` (``ServiceSpec.instances()``), known when the DAG is built.
"""

from __future__ import annotations

from airflow.sdk import TaskGroup

from opsdag.operators.service_base import IMAGE
from opsdag.operators.workload import ReplaceBatchOperator
from opsdag.spec.service import ServiceSpec
from opsdag.strategies.group_parts import (
    DEFERRED_RETRY,
    GroupTasks,
    chain_stages,
    stage,
    stage_group,
    start_and_smoke,
)
from opsdag.strategies.stages import rolling_stages

NAME = "rolling"


def rolling_group(spec: ServiceSpec) -> GroupTasks:
    plans = rolling_stages(spec)
    with TaskGroup(group_id=NAME, tooltip="rolling: batches of instances, each judged"):
        lead = start_and_smoke(spec, NAME, plans[0].canary_instances or 1)
        stages = []
        for plan in plans:
            with stage_group(plan):
                move = ReplaceBatchOperator(
                    task_id="replace",
                    service=spec,
                    strategy=NAME,
                    image=IMAGE,
                    canary=plan.canary_instances,
                    stable=plan.stable_instances,
                    weight=plan.weight,
                    **DEFERRED_RETRY,
                )
                stages.append(stage(spec, NAME, plan, move))
        return chain_stages(lead, stages)

"""Blue-green: the new colour beside the active one, judged on a preview route, then one switch.

deploy >> smoke >> preview (open the preview route >> pre-promotion gate) >> active ([approval
>>] switch >> post-promotion gate, whose abort switches back) >> scale_down_delay; promote
then removes the old colour. Until then a rollback is one router call.
"""

from __future__ import annotations

from airflow.sdk import TaskGroup

from opsdag.operators.traffic import OpenPreviewOperator, SwitchOperator
from opsdag.operators.workload import ScaleDownDelayOperator
from opsdag.spec.service import ServiceSpec
from opsdag.strategies.group_parts import (
    DEFERRED_RETRY,
    GroupTasks,
    chain_stages,
    stage,
    stage_group,
    start_and_smoke,
)
from opsdag.strategies.stages import bluegreen_stages

NAME = "bluegreen"


def bluegreen_group(spec: ServiceSpec) -> GroupTasks:
    bg = spec.bluegreen
    assert bg is not None  # the factory builds this group only for a spec with a bluegreen section
    with TaskGroup(group_id=NAME, tooltip="blue-green: preview, then one switch"):
        lead = start_and_smoke(spec, NAME, spec.instances())
        preview_plan, active_plan = bluegreen_stages(spec)
        with stage_group(preview_plan):
            open_preview = OpenPreviewOperator(
                task_id="open", service=spec, strategy=NAME, share=bg.preview_share
            )
            preview = stage(spec, NAME, preview_plan, open_preview)
        with stage_group(active_plan):
            switch = SwitchOperator(task_id="switch", service=spec, strategy=NAME)
            # while a person decides on the switch, the preview keeps being judged
            preview_percent = max(1, round(bg.preview_share * 100))
            active = stage(
                spec, NAME, active_plan, switch, waiting_weight=preview_percent, waiting_abort="preview_off"
            )
        delay = ScaleDownDelayOperator(
            task_id="scale_down_delay",
            service=spec,
            strategy=NAME,
            delay=bg.scale_down_delay,
            **DEFERRED_RETRY,
        )
        tasks = chain_stages(lead, [preview, active])
        tasks.last >> delay
        return GroupTasks(first=tasks.first, last=delay, moving=[*tasks.moving, delay])

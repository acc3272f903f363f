"""``release__<service>``: release a new image of a service, judged on its metrics.

validate_request (the request checked and resolved: image, strategy) >> build (only for
``build: true``: the image built, pushed and resolved by digest) >> preflight >>
strategy (the branch) >> the strategy's task group (canary, bluegreen or rolling; the
others are skipped) >> promote >> post_promotion_check; ``rollback`` runs when any of it
failed; ``report`` always runs; ``outcome`` fails the run unless the release was promoted
(or was a dry run). The DAG never branches on the platform: drivers and routers come from
the registry at run time.
"""

from __future__ import annotations

from collections.abc import Callable

import pendulum
from airflow.sdk import DAG, Param, TriggerRule

from opsdag.notify.notifiers import ReleaseStartedNotifier
from opsdag.operators.build_image import BuildImageOperator
from opsdag.operators.preflight import ReleasePreflightOperator
from opsdag.operators.release_outcome import ReleaseOutcomeOperator
from opsdag.operators.release_report import ReleaseReportOperator
from opsdag.operators.rollback import RollbackOperator
from opsdag.operators.service_base import IMAGE
from opsdag.operators.strategy_branch import StrategyBranchOperator
from opsdag.operators.validate_request import ValidateRequestOperator
from opsdag.operators.workload import PostPromotionCheckOperator, PromoteOperator
from opsdag.spec.request import image_pattern
from opsdag.spec.service import ServiceSpec
from opsdag.strategies.bluegreen import bluegreen_group
from opsdag.strategies.canary import canary_group
from opsdag.strategies.group_parts import GroupTasks
from opsdag.strategies.rolling import rolling_group

GROUPS: dict[str, Callable[[ServiceSpec], GroupTasks]] = {
    "canary": canary_group,
    "bluegreen": bluegreen_group,
    "rolling": rolling_group,
}


class GatelessRelease(ValueError):
    """A strategy group without a health gate: such a release must not be built."""


def release_params(spec: ServiceSpec) -> dict[str, Param]:
    """The run conf contract, rendered as a form in the UI and checked on every trigger."""
    return {
        "image": Param(
            type="string",
            pattern=image_pattern(spec.image.repository),
            title="Image",
            description=f"Full image reference: {spec.image.repository}:<tag> or "
            f"{spec.image.repository}@sha256:<digest>.",
        ),
        "strategy": Param(
            spec.strategy,
            type="string",
            enum=["canary", "bluegreen", "rolling"],
            title="Strategy",
            description=f"How the new version replaces the old one (the service's default: {spec.strategy}; "
            f"it can do: {', '.join(spec.strategies())}).",
        ),
        "build": Param(
            False,
            type="boolean",
            title="Build the image first",
            description="Build the image from the service's build context, push it as this version, "
            "then release it by digest"
            + ("." if spec.image.build else f" ({spec.name} declares no image.build: refused)."),
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Plan and report the release without changing anything.",
        ),
        "reason": Param(
            "",
            type="string",
            maxLength=500,
            title="Reason",
            description="Why this release: shown in the report and the notifications.",
        ),
    }


def release_doc(spec: ServiceSpec) -> str:
    steps = ", ".join(f"{s.weight} % for {s.bake}" for s in spec.canary.steps) if spec.canary else "-"
    return (
        f"### Release of `{spec.name}`\n\n{spec.description}\n\n"
        f"- platform: `{spec.platform.kind}` (router `{spec.platform.router.kind}`); "
        f"image repository: `{spec.image.repository}`\n"
        f"- strategies: {', '.join(spec.strategies())} (default `{spec.strategy}`); canary steps: {steps}\n"
        f"- judged on: {', '.join(m.name for m in spec.analysis.metrics)}\n"
        f"- owners: {', '.join(spec.owners)}\n"
    )


def release_dag(spec: ServiceSpec) -> DAG:
    """The release DAG of ``spec``: a task group for every strategy the spec describes."""
    with DAG(
        dag_id=f"release__{spec.name}",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        params=release_params(spec),
        tags=["opsdag", "release", spec.platform.kind],
        doc_md=release_doc(spec),
        default_args={"owner": ",".join(spec.owners), "retries": 0},
        render_template_as_native_obj=True,  # selectors render as a dict, not its text
    ) as dag:
        request = ValidateRequestOperator(
            task_id="validate_request", service=spec, on_success_callback=ReleaseStartedNotifier(service=spec)
        )
        build = BuildImageOperator(task_id="build", service=spec)
        # a skipped build (none asked, or a dry run) lets the release go on; a failed one stops it
        preflight = ReleasePreflightOperator(
            task_id="preflight", service=spec, trigger_rule=TriggerRule.NONE_FAILED
        )
        branch = StrategyBranchOperator(task_id="strategy", strategies=spec.strategies())
        request >> build >> preflight >> branch

        promote = PromoteOperator(task_id="promote", service=spec, trigger_rule=TriggerRule.ALL_DONE)
        moving = [promote]
        for name in spec.strategies():
            group = GROUPS[name](spec)
            if not any(task.task_id.endswith(".gate") for task in group.moving):
                raise GatelessRelease(f"{spec.name}: the {name} strategy would release without a health gate")
            branch >> group.first
            group.last >> promote
            moving += group.moving

        check = PostPromotionCheckOperator(task_id="post_promotion_check", service=spec, image=IMAGE)
        promote >> check
        rollback = RollbackOperator(task_id="rollback", service=spec, trigger_rule=TriggerRule.ONE_FAILED)
        moving >> rollback
        report = ReleaseReportOperator(task_id="report", service=spec, trigger_rule=TriggerRule.ALL_DONE)
        [check, rollback] >> report
        report >> ReleaseOutcomeOperator(task_id="outcome", trigger_rule=TriggerRule.ALL_DONE)
    return dag

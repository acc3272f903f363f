"""``release__<service>``: release a new image of a service, judged on its metrics."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, BaseOperator, Param, TaskGroup, TriggerRule

from opsdag.notify.notifiers import ReleaseStartedNotifier, StageVerdictNotifier
from opsdag.operators.canary import (
    DeployCanaryOperator,
    PostPromotionCheckOperator,
    PromoteCanaryOperator,
    RollbackCanaryOperator,
    SetCanaryWeightOperator,
)
from opsdag.operators.gate import HealthGateOperator
from opsdag.operators.preflight import ReleasePreflightOperator
from opsdag.operators.release_outcome import ReleaseOutcomeOperator
from opsdag.operators.release_report import ReleaseReportOperator
from opsdag.operators.stage_approval import StageApprovalOperator
from opsdag.operators.validate_request import ValidateRequestOperator
from opsdag.spec.request import image_pattern
from opsdag.spec.service import ServiceSpec

IMAGE = "{{ params.image }}"
# The canary's label matchers are known once it is deployed (they name its deployment).
SELECTORS = "{{ ti.xcom_pull(task_ids='deploy_canary', key='selectors') }}"
# A stage's first task runs once the previous step is done, and skips itself when anything
# failed, so the stages after a failure show as skipped (not upstream_failed).
AFTER_PREVIOUS = TriggerRule.ALL_DONE
APPROVAL_TIMEOUT = timedelta(hours=1)


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
            description=f"How the new version replaces the old one (the service's default: {spec.strategy}).",
        ),
        "build": Param(
            False,
            type="boolean",
            title="Build the image first",
            description="Build and push the image from the service's build context before releasing.",
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
        f"- platform: `{spec.platform.kind}`; image repository: `{spec.image.repository}`\n"
        f"- default strategy: `{spec.strategy}`; canary steps: {steps}\n"
        f"- judged on: {', '.join(m.name for m in spec.analysis.metrics)}\n"
        f"- owners: {', '.join(spec.owners)}\n"
    )


def release_dag(spec: ServiceSpec) -> DAG:
    """validate -> preflight -> canary at 0 % -> stages (weight, gate) -> promote -> check -> report.

    A failed gate, a canary that never becomes ready, or a rejected approval sends the
    run to ``rollback`` (trigger rule one_failed); the stages after the failure are
    skipped, not failed. ``report`` always runs; ``outcome`` fails the run unless the
    new version was promoted (or the run was a dry run).
    """
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
        preflight = ReleasePreflightOperator(task_id="preflight", service=spec, image=IMAGE)
        deploy = DeployCanaryOperator(task_id="deploy_canary", service=spec, image=IMAGE)
        request >> preflight >> deploy

        previous: BaseOperator = deploy
        moving: list[BaseOperator] = [deploy]
        for step in spec.canary.steps if spec.canary else []:
            with TaskGroup(group_id=f"stage_{step.weight}", tooltip=f"{step.weight} % for {step.bake}"):
                first = set_weight = SetCanaryWeightOperator(
                    task_id="set_weight", service=spec, weight=step.weight, trigger_rule=AFTER_PREVIOUS
                )
                if step.approval:
                    first = StageApprovalOperator(
                        task_id="approval",
                        service=spec,
                        subject=f"Release {spec.name}: send {step.weight} % of traffic to {IMAGE}?",
                        body="Approve to continue the canary; reject to roll it back.",
                        response_timeout=APPROVAL_TIMEOUT,
                        trigger_rule=AFTER_PREVIOUS,
                    )
                    set_weight.trigger_rule = TriggerRule.ALL_SUCCESS
                    first >> set_weight
                gate = HealthGateOperator(
                    task_id="gate",
                    weight=step.weight,
                    bake=step.bake,
                    selectors=SELECTORS,
                    analysis=spec.analysis,
                    gate_name=f"stage_{step.weight}",
                    on_success_callback=StageVerdictNotifier(service=spec),
                    on_failure_callback=StageVerdictNotifier(service=spec),
                )
                set_weight >> gate
            previous >> first
            previous = gate
            moving += [first, set_weight, gate]

        promote = PromoteCanaryOperator(task_id="promote", service=spec, trigger_rule=AFTER_PREVIOUS)
        check = PostPromotionCheckOperator(task_id="post_promotion_check", service=spec, image=IMAGE)
        previous >> promote >> check
        rollback = RollbackCanaryOperator(
            task_id="rollback", service=spec, trigger_rule=TriggerRule.ONE_FAILED
        )
        [*moving, promote] >> rollback
        report = ReleaseReportOperator(task_id="report", service=spec, trigger_rule=TriggerRule.ALL_DONE)
        [check, rollback] >> report
        report >> ReleaseOutcomeOperator(task_id="outcome", trigger_rule=TriggerRule.ALL_DONE)
    return dag

"""``release__<service>``: release a new image of a service, judged on its metrics."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, BaseOperator, Param, TaskGroup, TriggerRule, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from opsdag.notify.stage import StageVerdictNotifier
from opsdag.operators.approval import StageApprovalOperator
from opsdag.operators.canary import (
    DeployCanaryOperator,
    PostPromotionCheckOperator,
    PromoteCanaryOperator,
    RollbackCanaryOperator,
    SetCanaryWeightOperator,
)
from opsdag.operators.gate import HealthGateOperator
from opsdag.operators.preflight import ReleasePreflightOperator
from opsdag.operators.report import ReleaseReportOperator
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
        request = validate_request_task(spec)
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
        report >> release_outcome_task()
    return dag


def validate_request_task(spec: ServiceSpec):
    @task(task_id="validate_request")
    def validate_request() -> dict:
        """Refuse a bad run conf (unknown keys, another repository's image) before anything changes."""
        from opsdag.notify.release import notify_release_started
        from opsdag.spec.request import RequestRefused
        from opsdag.spec.request import validate_request as check

        context = get_current_context()
        conf = dict(context["dag_run"].conf or {})
        try:
            request = check({**dict(context["params"]), **conf}, spec)
        except RequestRefused as exc:
            raise AirflowFailException(str(exc)) from None
        notify_release_started(
            spec,
            image=request.image,
            strategy=request.strategy or spec.strategy,
            reason=request.reason,
            dry_run=request.dry_run,
            stages=[
                {"name": f"stage_{s.weight}", "weight": s.weight, "bake_s": s.bake.total_seconds()}
                for s in (spec.canary.steps if spec.canary else [])
            ],
            run_id=context["run_id"],
        )
        return request.model_dump()

    return validate_request()


def release_outcome_task():
    @task(task_id="outcome", trigger_rule=TriggerRule.ALL_DONE)
    def outcome(ti=None) -> str:
        """End the run failed unless the new version was promoted (or it was a dry run)."""
        summary = ti.xcom_pull(task_ids="report", key="summary") or {}
        status = summary.get("status", "failed")
        if status not in ("promoted", "planned"):
            raise AirflowFailException(f"release {status}: {summary.get('text', 'see the report')}")
        return status

    return outcome()

"""``release__<service>``: release a new image of a service, judged on its metrics."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, get_current_context, task

from opsdag.spec.request import image_pattern
from opsdag.spec.service import ServiceSpec


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
    with DAG(
        dag_id=f"release__{spec.name}",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        params=release_params(spec),
        tags=["opsdag", "release", spec.platform.kind],
        doc_md=release_doc(spec),
        owner_links={},
        default_args={"owner": ",".join(spec.owners), "retries": 0},
    ) as dag:

        @task(task_id="validate_request")
        def validate_request() -> dict:
            """Refuse a bad run conf before anything changes; the rest of the run uses this result."""
            from opsdag.spec.request import validate_request as check

            request = check(dict(get_current_context()["params"]), spec)
            return request.model_dump()

        validate_request()
    return dag

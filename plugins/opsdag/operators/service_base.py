"""The base of every operator that acts on a service: its workload driver and traffic router.

Both are built on first use, never at DAG parse, from the spec through
:mod:`opsdag.platforms.registry`. Every release task after ``validate_request`` reads the
validated request (the resolved image and strategy) from that task's XCom, and, when the
run built its image, the ``build`` task's: the image it pushed, by digest.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowSkipException

from opsdag.operators.run_state import RecordsItsError, run_has_failed
from opsdag.platforms.base import TrafficRouter, WorkloadDriver
from opsdag.platforms.registry import driver_for, router_for
from opsdag.spec.service import ServiceSpec

REQUEST_TASK = "validate_request"
BUILD_TASK = "build"
# The resolved image, as every task after the build reads it (render_template_as_native_obj):
# the built digest when the run built one (a skipped build returns nothing), else the request's.
IMAGE = "{{ (ti.xcom_pull(task_ids='build') or ti.xcom_pull(task_ids='validate_request'))['image'] }}"


def resolved_request(ti: Any) -> dict[str, Any]:
    """The validated request, with the built image (``image``, ``digest``, ``build``) when there is one."""
    request = ti.xcom_pull(task_ids=REQUEST_TASK) or {}
    built = ti.xcom_pull(task_ids=BUILD_TASK) if request.get("build") else None
    return {**request, **built} if built else request


class ServiceOperator(RecordsItsError, BaseOperator):
    """Holds the service spec; subclasses implement ``run(context)``.

    A failure is recorded as the task's XCom ``error`` so that the report names the
    failing step with its own error.

    :param service: the service's spec.
    :param strategy: the strategy whose task group this task belongs to (None: every strategy's).
    """

    ui_color = "#e8f1fb"

    def __init__(self, *, service: ServiceSpec, strategy: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service = service
        self.strategy = strategy

    @cached_property
    def driver(self) -> WorkloadDriver:
        return driver_for(self.service)

    @cached_property
    def router(self) -> TrafficRouter:
        return router_for(self.service)

    @staticmethod
    def request(context: Any) -> dict[str, Any]:
        """The validated request (``image``, ``strategy``, ``dry_run``, ...); empty if it was refused."""
        return resolved_request(context["ti"])

    def skip_unless_moving(self, context: Any, would: str) -> None:
        """Skip (not fail) when this step must not change anything.

        When an earlier step of this run failed (the rollback owns the new version), when
        this task belongs to a strategy the run did not choose, and in a dry run (saying
        what the step would have done). Tasks that move traffic run with trigger rule
        all_done so that they skip rather than show upstream_failed.
        """
        if run_has_failed(context):
            raise AirflowSkipException("an earlier step of this release failed; it is being rolled back")
        chosen = self.request(context).get("strategy")
        if self.strategy is not None and chosen != self.strategy:
            raise AirflowSkipException(f"this release runs the {chosen} strategy, not {self.strategy}")
        if context["params"].get("dry_run"):
            raise AirflowSkipException(f"dry run: would {would}")

"""The base of every operator that acts on a service's workloads through its platform driver."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowSkipException

from opsdag.operators.run_state import RecordsItsError, run_has_failed
from opsdag.platforms import Platform, platform_for
from opsdag.spec.service import ServiceSpec


class ServiceOperator(RecordsItsError, BaseOperator):
    """Holds the service spec; the platform driver is built on first use, never at DAG parse.

    Subclasses implement ``run(context)``; a failure is recorded as the task's XCom
    ``error`` so that the report names the failing step with its own error.

    :param service: the service's spec.
    """

    ui_color = "#e8f1fb"

    def __init__(self, *, service: ServiceSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service = service

    @cached_property
    def platform(self) -> Platform:
        return platform_for(self.service)

    def skip_if_release_failed(self, context: Any) -> None:
        """Skip (not fail) a stage when an earlier step of this run failed: the rollback owns the canary.

        Stage tasks run with trigger rule all_done so that they can be skipped rather than
        marked upstream_failed; a skipped task's downstream tasks skip too.
        """
        if run_has_failed(context):
            raise AirflowSkipException(
                "an earlier step of this release failed; the canary is being rolled back"
            )

    def skip_if_dry_run(self, context: Any, would: str) -> None:
        """In a dry run, say what would have changed and skip (the downstream tasks skip too)."""
        if context["params"].get("dry_run"):
            raise AirflowSkipException(f"dry run: would {would}")

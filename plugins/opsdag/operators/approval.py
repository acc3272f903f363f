"""A person approves a canary stage before its traffic grows (Airflow's human-in-the-loop)."""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowSkipException

from opsdag.operators.service import release_failed


class StageApprovalOperator(ApprovalOperator):
    """Ask for approval before a stage; skipped, without asking, once the release has failed.

    A rejection fails the task (``fail_on_reject``) so that the canary is rolled back
    rather than left at its current weight.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(fail_on_reject=True, **kwargs)

    def execute(self, context: Any) -> Any:
        if release_failed(context):
            raise AirflowSkipException("an earlier step of this release failed; no approval needed")
        if context["params"].get("dry_run"):
            raise AirflowSkipException("dry run: would ask for approval")
        return super().execute(context)

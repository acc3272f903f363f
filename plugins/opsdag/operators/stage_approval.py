"""A person approves a canary stage before its traffic grows (Airflow's human-in-the-loop)."""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowSkipException

from opsdag.notify.approval_request import ApprovalRequestNotifier
from opsdag.operators.run_state import recording_errors, run_has_failed
from opsdag.spec.service import ServiceSpec


class StageApprovalOperator(ApprovalOperator):
    """Ask for approval before a stage (on Slack too); skipped, without asking, once the release failed.

    A rejection fails the task (``fail_on_reject``) so that the canary is rolled back
    rather than left at its current weight; the rejection is recorded as the task's error.

    :param service: the service's spec: its Slack channel gets the request with a link to it.
    """

    def __init__(self, *, service: ServiceSpec, **kwargs: Any) -> None:
        super().__init__(fail_on_reject=True, notifiers=[ApprovalRequestNotifier(service=service)], **kwargs)

    def execute(self, context: Any) -> Any:
        if run_has_failed(context):
            raise AirflowSkipException("an earlier step of this release failed; no approval needed")
        if context["params"].get("dry_run"):
            raise AirflowSkipException("dry run: would ask for approval")
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        with recording_errors(context, self.log):
            return super().execute_complete(context, event)

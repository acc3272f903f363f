"""A person approves a runbook's destructive step (Airflow 3.3's Human-in-the-loop), told on Slack.

Like the release's stage approvals (``operators/stage_approval.py``): an ``ApprovalOperator``
whose request is posted to Slack with a link to Airflow's approval page
(``notify.approval_request``, saying the step is skipped without an answer). Unlike them,
a rejection neither fails this task nor skips the tasks after it: the destructive step
reads the answer, records itself as skipped ("rejected by ...") and the runbook goes on
to verify and report. Without an answer within ``guards.approval_timeout`` the default,
``Reject``, applies. A dry run asks nothing: the step only plans; nor is anyone asked
while a release or another runbook acts on the step's service (the step then refuses,
one actor per service).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator

from opsdag.notify.approval_request import ApprovalRequestNotifier
from opsdag.spec.runbook import RunbookSpec


class RunbookApprovalOperator(ApprovalOperator):
    """Ask for approval of one destructive step; returns the answer for the step to read.

    :param runbook: the runbook's spec (its Slack channel, its approval timeout).
    :param step_id: the destructive step this approval is for.
    """

    def __init__(self, *, runbook: RunbookSpec, step_id: str, **kwargs: Any) -> None:
        super().__init__(
            notifiers=[
                ApprovalRequestNotifier(
                    slack=runbook.notifications.slack,
                    name=f"runbook {runbook.name}",
                    unanswered="the step is skipped",
                )
            ],
            defaults=[ApprovalOperator.REJECT],
            response_timeout=runbook.guards.approval_timeout,
            **kwargs,
        )
        self.runbook = runbook
        self.step_id = step_id

    def execute(self, context: Any) -> Any:
        if context["params"].get("dry_run", self.runbook.guards.dry_run):
            self.log.info("dry run: no approval asked for %s (it only plans)", self.step_id)
            return None
        service = getattr(self.runbook.steps[self.runbook.step_ids().index(self.step_id)], "service", None)
        if service:
            from opsdag.operators.runbook_service import other_actors

            _, reason = other_actors(context, service, self.runbook.name)
            if reason:  # the step refuses on its own and records why; nobody is asked for nothing
                self.log.info("no approval asked for %s: %s", self.step_id, reason)
                return None
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        """The answer, without skipping what follows (the step records a rejection itself)."""
        answer = HITLOperator.execute_complete(self, context=context, event=event)
        chosen = answer["chosen_options"]
        self.log.info("%s: %s by %s", self.step_id, ", ".join(chosen), answer.get("responded_by_user"))
        return answer

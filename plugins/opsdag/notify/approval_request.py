"""Ask people on Slack to approve a canary stage or a runbook step, with a link to Airflow's approval page.

Given to the HITL operator as ``notifiers=``: Airflow calls it once the approval request
is recorded, just before the task waits. A dead Slack never fails the release (the
request still waits in Airflow's "Required actions").
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseNotifier

from opsdag.notify.release_messages import slack_text
from opsdag.notify.slack import send_slack
from opsdag.spec.service import ServiceSpec

UNANSWERED_STAGE = "the stage fails and the canary is rolled back"


def approval_message(
    *,
    service_name: str,
    subject: str,
    body: str,
    link: str | None,
    timeout: str,
    unanswered: str = UNANSWERED_STAGE,
) -> tuple[str, list[dict[str, Any]]]:
    """``(fallback text, Block Kit blocks)`` of an approval request; pure, for tests.

    :param unanswered: what happens without an answer in ``timeout``.
    """
    action = (
        f"<{link}|Approve or reject in Airflow>"
        if link
        else "Approve or reject in Airflow (Required actions)"
    )
    text = f"Approval needed: {subject}"
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": f"Approval needed: {service_name}"[:150]}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"*{slack_text(subject)}*\n{slack_text(body)}"[:3000]},
        },
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"{action}. Without an answer in {timeout} {unanswered}.",
            },
        },
    ]
    return text, blocks


class ApprovalRequestNotifier(BaseNotifier):
    """Post the approval request to a Slack channel.

    :param service: the service whose canary stage asks (its ``notifications.slack`` says where).
    :param slack: or the Slack settings directly (a runbook's ``notifications.slack``), with ``name``.
    :param name: who asks, in the message's header (default: the service's name).
    :param unanswered: what happens without an answer (default: a stage's rollback).
    None as the Slack settings: nothing is sent.
    """

    template_fields = ()

    def __init__(
        self,
        *,
        service: ServiceSpec | None = None,
        slack: Any = None,
        name: str | None = None,
        unanswered: str = UNANSWERED_STAGE,
    ) -> None:
        super().__init__()
        self.slack = service.notifications.slack if service is not None else slack
        self.name = name or (service.name if service is not None else "?")
        self.unanswered = unanswered

    def notify(self, context: Any) -> None:
        slack = self.slack
        if slack is None:
            return
        task = context["task"]
        try:
            link = task.generate_link_to_ui_from_context(context=context)
        except Exception as exc:  # no [api] base_url: the message still goes, without the link
            self.log.info("no link to the approval page: %s", exc)
            link = None
        timeout = task.response_timeout
        text, blocks = approval_message(
            service_name=self.name,
            subject=task.subject,
            body=task.body or "",
            link=link,
            timeout=f"{int(timeout.total_seconds() // 60)} min" if timeout else "no limit",
            unanswered=self.unanswered,
        )
        send_slack(slack.connection_id, text, blocks=blocks, channel=slack.channel)

"""Tell people each canary stage's verdict, with the measured values, as the gate ends."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseNotifier

from opsdag.spec.service import ServiceSpec


class StageVerdictNotifier(BaseNotifier):
    """Task callback of a health gate: posts the gate's verdict (its ``verdict`` XCom) to Slack.

    Never raises: a notification that cannot be sent is logged and the release goes on.

    :param service: the service whose Slack settings to use.
    """

    def __init__(self, *, service: ServiceSpec) -> None:
        super().__init__()
        self.service = service

    def notify(self, context: Any) -> None:
        from opsdag.notify.release import notify_stage_verdict

        slack = self.service.notifications.slack
        if slack is None:
            return
        try:
            verdict = context["ti"].xcom_pull(task_ids=context["ti"].task_id, key="verdict")
        except Exception:
            verdict = None
        if not verdict:
            return
        notify_stage_verdict(self.service, verdict, run_id=context.get("run_id"))

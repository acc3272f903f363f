"""``escalate``: when the runbook did not restore the service, call people and ask them to take it.

Runs whatever happened before it (trigger rule ``all_done``) and decides from the steps'
records (:func:`opsdag.runbooks.engine.escalation_reason`): nothing to escalate, it is
recorded as skipped; else the message goes to the runbook's Slack channel with its
mentions and why, and a person chooses one of the step's options through Airflow's
Human-in-the-loop (no answer within the step's timeout: the first option). A dry run
posts the message and asks nothing. The escalation (to whom, when, the message) is in
the postmortem.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from opsdag.runbooks.engine import ACTION_KEY, action_record, escalation_reason, now
from opsdag.spec.runbook import RunbookSpec, step_id

_WHY_KEY = "escalation_reason"


class EscalateOperator(HITLOperator):
    """Step ``index`` (an ``escalate``) of ``runbook``; returns the person's choice when one was asked.

    :param runbook: the runbook's spec.
    :param index: the step's position in ``runbook.steps``.
    """

    ui_color = "#f8d7da"

    def __init__(self, *, runbook: RunbookSpec, index: int, **kwargs: Any) -> None:
        step = runbook.steps[index]
        sid = step_id(index, step)
        kwargs.setdefault("task_id", sid)
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(
            subject=f"Runbook {runbook.name}: {step.message}",
            body=step.message,
            options=list(step.options),
            defaults=[step.options[0]],
            response_timeout=step.timeout,
            **kwargs,
        )
        self.runbook = runbook
        self.step = step
        self.sid = sid
        self.earlier = [step_id(i, s) for i, s in enumerate(runbook.steps[:index])]

    def _push(
        self, context: Any, result: str, detail: str, started: Any, data: dict[str, Any]
    ) -> dict[str, Any]:
        record = action_record(
            self.step, self.sid, result=result, started_at=started, detail=detail, data=data
        )
        context["ti"].xcom_push(key=ACTION_KEY, value=record)
        return record

    def execute(self, context: Any) -> Any:
        from opsdag.notify.slack import send_slack

        started = now()
        ti = context["ti"]
        records = [ti.xcom_pull(task_ids=sid, key=ACTION_KEY) for sid in self.earlier]
        why = escalation_reason(records)
        if why is None:
            self._push(context, "skipped", "the runbook restored the service: nobody called", started, {})
            raise AirflowSkipException("nothing to escalate")
        slack = self.runbook.notifications.slack
        conn_id = slack.connection_id if slack else "slack_default"
        channel = slack.channel if slack else None
        alert = context["params"].get("alert") or {}
        dry_run = bool(context["params"].get("dry_run", self.runbook.guards.dry_run))
        mentions = " ".join(self.step.mentions)
        head = f"{mentions + ' ' if mentions else ''}[{self.runbook.name}]"
        head += f" {alert['name']}" if alert.get("name") else ""
        service = (alert.get("labels") or {}).get("service")
        head += f" ({service})" if service else ""
        ask = (
            "" if dry_run else f"\nChoose in Airflow ({', '.join(self.step.options)}): {self._link(context)}"
        )
        text = f"{head}{' (dry run)' if dry_run else ''}: {self.step.message}\nWhy: {why}{ask}"
        if not send_slack(conn_id, text, channel=channel):
            self._push(context, "failed", f"not sent to Slack through {conn_id!r}; why: {why}", started, {})
            raise AirflowFailException(
                f"{self.sid}: the escalation was not sent to Slack through {conn_id!r}"
            )
        to = (f"Slack {channel}" if channel else f"Slack ({conn_id})") + (f" {mentions}" if mentions else "")
        data = {"escalated_to": to, "text": text, "why": why}
        ti.xcom_push(key=_WHY_KEY, value={"started_at": started.isoformat(), **data})
        if dry_run:
            return self._push(
                context, "done", f"sent to {to} (dry run: no choice asked); why: {why}", started, data
            )
        self._push(context, "done", f"sent to {to}; waiting for a choice; why: {why}", started, data)
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from datetime import datetime

        answer = super().execute_complete(context=context, event=event)
        sent = context["ti"].xcom_pull(task_ids=self.task_id, key=_WHY_KEY) or {}
        user = answer.get("responded_by_user") or {}
        who = (user.get("name") or user.get("id")) if isinstance(user, dict) else str(user)
        chosen = ", ".join(answer.get("chosen_options") or [])
        started = datetime.fromisoformat(sent["started_at"]) if sent.get("started_at") else now()
        data = {k: v for k, v in sent.items() if k != "started_at"}
        data["choice"] = {"chosen": answer.get("chosen_options"), "by": who or "timeout"}
        self._push(
            context,
            "done",
            f"sent to {data.get('escalated_to')}; {chosen} (by {who or 'timeout'}); why: {data.get('why')}",
            started,
            data,
        )
        return answer

    def _link(self, context: Any) -> str:
        try:
            return self.generate_link_to_ui_from_context(context=context)
        except Exception:  # no [api] base_url: the message still goes, without the link
            return "(the runbook's run, task " + self.task_id + ")"

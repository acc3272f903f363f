"""The runbook DAG's step operators: one task per step of the spec, each pushing its action record.

``RunbookStepOperator`` runs a step and pushes its record (XCom ``action``: the fields of
``IncidentAction``), also when the step fails, so the postmortem can say what happened.
The decisions are in :mod:`opsdag.runbooks.engine`; the operators only read inputs,
call, push and log. A check that finds the alert no longer holds stops the runbook: its
record is pushed and the task is skipped, and with it every later step.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, TaskDeferred

from opsdag.format import duration
from opsdag.runbooks.engine import ACTION_KEY, ESCALATE_KEY, action_record, metric_verdict, now
from opsdag.spec.runbook import RunbookSpec, step_id

STARTED_KEY = "started_at"


class StopRunbook(Exception):
    """The step found no reason to go on (e.g. the alert no longer holds): later steps are skipped.

    ``escalate``: the service is still not restored (another actor, nothing to roll back),
    so an ``escalate`` step after it calls people.
    """

    def __init__(self, message: str, *, escalate: bool = False, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.escalate = escalate
        self.data = data or {}


class StepFailed(Exception):
    """The step did not achieve what it is for; its record (result ``failed``) says why."""


class RunbookStepOperator(BaseOperator):
    """Run step ``index`` of ``runbook``; subclasses implement ``perform(context, started)``.

    ``perform`` returns ``(result, detail, data)``; raising ``StopRunbook`` records the step
    as done and skips the rest, ``StepFailed`` or any other error records it as failed.

    :param runbook: the runbook's spec.
    :param index: the step's position in ``runbook.steps``.
    """

    ui_color = "#f3e6d8"

    def __init__(self, *, runbook: RunbookSpec, index: int, **kwargs: Any) -> None:
        step = runbook.steps[index]
        kwargs.setdefault("task_id", step_id(index, step))
        super().__init__(**kwargs)
        self.runbook = runbook
        self.index = index
        self.step = step
        self.sid = step_id(index, step)

    def dry_run(self, context: Any) -> bool:
        return bool(context["params"].get("dry_run", self.runbook.guards.dry_run))

    def execute(self, context: Any) -> dict[str, Any]:
        return self._finish(context, lambda: self.perform(context, now()), now())

    def _finish(self, context: Any, perform: Any, started: datetime) -> dict[str, Any]:
        try:
            result, detail, data, extra = self._unpack(perform())
        except TaskDeferred:
            raise
        except StopRunbook as stop:
            data = {**stop.data, **({ESCALATE_KEY: True} if stop.escalate else {})}
            result = "skipped" if stop.escalate else "done"
            self.push(
                context,
                action_record(
                    self.step, self.sid, result=result, started_at=started, detail=str(stop), data=data
                ),
            )
            raise AirflowSkipException(f"{self.sid}: {stop}") from None
        except Exception as exc:
            detail = str(exc) if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {exc}"
            self.push(
                context,
                action_record(self.step, self.sid, result="failed", started_at=started, detail=detail),
            )
            raise AirflowFailException(f"{self.sid}: {detail}") from exc
        record = action_record(
            self.step, self.sid, result=result, started_at=started, detail=detail, data=data, **extra
        )
        self.push(context, record)
        self.log.info("%s (%s): %s: %s", self.sid, self.step.action, result, detail)
        return record

    @staticmethod
    def _unpack(value: tuple[Any, ...]) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
        result, detail, data, *extra = value
        return result, detail, data, (extra[0] if extra else {})

    def started(self, context: Any) -> datetime:
        """When a deferred step started (pushed before deferring; a resumed task has only XComs)."""
        started = context["ti"].xcom_pull(task_ids=self.task_id, key=STARTED_KEY)
        return datetime.fromisoformat(started) if started else now()

    def push(self, context: Any, record: dict[str, Any]) -> None:
        context["ti"].xcom_push(key=ACTION_KEY, value=record)

    def perform(self, context: Any, started: datetime) -> tuple[Any, ...]:
        raise NotImplementedError


class CheckMetricOperator(RunbookStepOperator):
    """``check_metric``: assess (confirm the alert, else stop) or verify (wait, deferred, for recovery)."""

    template_fields = ("query",)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.query = self.step.query

    def perform(self, context: Any, started: datetime) -> tuple[Any, ...]:
        from opsdag.hooks.prometheus import PrometheusHook

        step = self.step
        if step.check == "verify" and self.dry_run(context):
            # nothing was changed, so there is nothing to wait for: one reading, for the report
            value = PrometheusHook(step.prometheus_conn_id).query(self.query)
            ok, reason = metric_verdict(value, above=step.above, below=step.below)
            if ok:
                verification = {
                    "recovered": True,
                    "at": now().isoformat(),
                    "detail": f"{self.query}: {reason}",
                }
                return (
                    "done",
                    f"dry run, already within bounds: {reason}",
                    {"value": value, "verification": verification},
                )
            return (
                "planned",
                f"dry run: would wait up to {duration(step.wait_for.total_seconds())} for it; now {reason}",
                {"value": value},
            )
        if step.check == "verify":
            from opsdag.runbooks.metric_wait import MetricBoundTrigger

            self.log.info("waiting up to %s for %s to be within bounds", step.wait_for, self.query)
            context["ti"].xcom_push(key=STARTED_KEY, value=started.isoformat())
            self.defer(
                trigger=MetricBoundTrigger(
                    query=self.query,
                    above=step.above,
                    below=step.below,
                    timeout_s=step.wait_for.total_seconds(),
                    interval_s=step.interval.total_seconds(),
                    prometheus_conn_id=step.prometheus_conn_id,
                ),
                method_name="execute_complete",
                timeout=step.wait_for + timedelta(minutes=2),
            )
        value = PrometheusHook(step.prometheus_conn_id).query(self.query)
        holds, reason = metric_verdict(value, above=step.above, below=step.below)
        if not holds:
            raise StopRunbook(f"the alert no longer holds ({reason}): the runbook stops here")
        return "done", f"the alert holds: {reason}", {"value": value}

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        def verdict() -> tuple[Any, ...]:
            value, reason = event.get("value"), event.get("reason", "")
            waited = f"{event.get('readings', 0)} reading(s)"
            if event.get("status") != "passed":
                limit = duration(self.step.wait_for.total_seconds())
                raise StepFailed(f"not recovered within {limit}: {reason} ({waited})")
            verification = {"recovered": True, "at": event["at"], "detail": f"{self.query}: {reason}"}
            return "done", f"recovered: {reason} ({waited})", {"value": value, "verification": verification}

        return self._finish(context, verdict, self.started(context))


class NotifyOperator(RunbookStepOperator):
    """``notify``: post the message to the runbook's Slack channel; not sent is a failed step."""

    def perform(self, context: Any, started: datetime) -> tuple[Any, ...]:
        from opsdag.notify.slack import send_slack

        slack = self.runbook.notifications.slack
        conn_id = slack.connection_id if slack else "slack_default"
        channel = slack.channel if slack else None
        alert = context["params"].get("alert") or {}
        service = (alert.get("labels") or {}).get("service")
        head = f"[{self.runbook.name}]" + (f" {alert['name']}" if alert.get("name") else "")
        head += f" ({service})" if service else ""
        text = f"{head}{' (dry run)' if self.dry_run(context) else ''}: {self.step.message}"
        if not send_slack(conn_id, text, channel=channel):
            raise StepFailed(f"not sent to Slack through {conn_id!r} (see the task log)")
        to = f"Slack {channel}" if channel else f"Slack ({conn_id})"
        return "done", f"sent to {to}: {self.step.message}", {"text": text, "escalated_to": to}


class WaitOperator(RunbookStepOperator):
    """``wait``: let time pass, deferred (no worker slot held)."""

    def perform(self, context: Any, started: datetime) -> tuple[Any, ...]:
        from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

        context["ti"].xcom_push(key=STARTED_KEY, value=started.isoformat())
        self.defer(trigger=TimeDeltaTrigger(self.step.duration), method_name="execute_complete")
        raise AssertionError("defer returns no control")

    def execute_complete(self, context: Any, event: Any = None) -> dict[str, Any]:
        return self._finish(
            context,
            lambda: ("done", f"waited {duration(self.step.duration.total_seconds())}", {}),
            self.started(context),
        )

"""A person approves a stage before its traffic grows, while the canary keeps being judged.

Airflow 3.3's ``ApprovalOperator`` parks its task in ``awaiting_input``: nothing runs, so
a canary already taking traffic would go unwatched for up to the response timeout. When
the canary takes traffic while the approval waits (``current_weight`` > 0), this operator
records the request and notifies exactly as the ApprovalOperator does, then defers to
:class:`~opsdag.triggers.approval_watch.ApprovalWatchTrigger` instead of parking: a
person's answer (UI, REST API) resumes the deferred task as it would a parked one, and a
failing verdict first takes traffic off the canary (``abort_action``) and then fails this
task, so the release rolls back. At 0 % there is nothing to judge: it parks as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, TaskAwaitingInput

from opsdag.hooks.prometheus import DEFAULT_TIMEOUT
from opsdag.notify.approval_request import ApprovalRequestNotifier
from opsdag.operators.run_state import recording_errors, run_has_failed
from opsdag.spec.service import ServiceSpec
from opsdag.triggers.approval_watch import ANALYSIS_SOURCE, ApprovalWatchTrigger
from opsdag.triggers.traffic_abort import abort_request, describe_abort

# Past the response timeout, the trigger applies it itself; this margin only bounds a trigger
# that could not (the API unreachable the whole time).
DEFER_MARGIN = timedelta(minutes=5)
# How often the trigger reads the response; on Airflow 3.3 an answer resumes the task by itself.
RESPONSE_POLL_S = 5.0


class StageApprovalOperator(ApprovalOperator):
    """Ask for approval before a stage (on Slack too); skipped, without asking, once the release
    failed or in a dry run.

    A rejection fails the task (``fail_on_reject``) so that the canary is rolled back
    rather than left at its current weight; so does a failing verdict while waiting (the
    XCom ``verdict`` says why, with the trigger's ``abort``). Either is recorded as the
    task's error.

    :param service: the service's spec: its Slack channel gets the request with a link to it;
        its analysis judges the canary while the approval waits; its router is what an abort acts on.
    :param current_weight: the canary's share of traffic while the approval waits (the previous
        stage's weight), in percent; 0 (default): nothing to judge, the task only waits.
    :param selectors: label matchers for ``$canary``/``$stable`` (templated, like the gate's);
        needed when ``current_weight`` > 0.
    :param abort_action: what the trigger does to traffic on a failing verdict: ``weight_zero``,
        ``switch_back`` or ``preview_off``; None (default): nothing (the rollback task does it).
    :param query_timeout: seconds for one Prometheus query.
    """

    template_fields: Sequence[str] = (*ApprovalOperator.template_fields, "selectors")
    template_fields_renderers = {"selectors": "json"}

    def __init__(
        self,
        *,
        service: ServiceSpec,
        current_weight: int = 0,
        selectors: dict[str, str] | str | None = None,
        abort_action: str | None = None,
        query_timeout: float = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(fail_on_reject=True, notifiers=[ApprovalRequestNotifier(service=service)], **kwargs)
        if current_weight and selectors is None:
            raise ValueError(f"{self.task_id}: judging the canary at {current_weight} % needs selectors")
        abort_request(service, abort_action)  # an unknown action is refused when the DAG is built
        self.service = service
        self.current_weight = current_weight
        self.selectors = selectors
        self.abort_action = abort_action
        self.query_timeout = query_timeout

    def execute(self, context: Any) -> Any:
        if run_has_failed(context):
            raise AirflowSkipException("an earlier step of this release failed; no approval needed")
        if context["params"].get("dry_run"):
            raise AirflowSkipException("dry run: would ask for approval")
        if not self.current_weight:
            return super().execute(context)
        try:
            return super().execute(context)  # records the request and notifies, then parks ...
        except TaskAwaitingInput:
            pass
        self.log.info(
            "the canary takes %d %% while this approval waits: it is judged on %s meanwhile",
            self.current_weight,
            ", ".join(m.name for m in self.service.analysis.metrics),
        )
        self.defer(  # ... but waits deferred instead, with the canary watched
            trigger=ApprovalWatchTrigger(
                hitl=self._hitl_kwargs(context),
                gate=self.task_id,
                metrics=[m.model_dump(mode="json") for m in self.service.analysis.metrics],
                selectors=dict(self.selectors),  # type: ignore[arg-type]
                compare_with_stable=self.current_weight < 100,
                prometheus_conn_id=self.service.analysis.prometheus_conn_id,
                query_timeout=self.query_timeout,
                abort=abort_request(self.service, self.abort_action),
            ),
            method_name="execute_complete",
            timeout=self.response_timeout + DEFER_MARGIN if self.response_timeout else None,
        )

    def _hitl_kwargs(self, context: Any) -> dict[str, Any]:
        """What Airflow's HITLTrigger needs, with the deadline ``execute`` recorded in the summary."""
        deadline = self.hitl_summary_extra.get("timeout_datetime")
        return {
            "ti_id": context["task_instance"].id,
            "options": self.options,
            "params": self.serialized_params,
            "defaults": self.defaults,
            "multiple": self.multiple,
            "timeout_datetime": datetime.fromisoformat(deadline) if deadline else None,
            "poke_interval": RESPONSE_POLL_S,
        }

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        with recording_errors(context, self.log):
            if event.get("source") == ANALYSIS_SOURCE:
                context["ti"].xcom_push(key="verdict", value={**event, "weight": self.current_weight})
                if abort := event.get("abort"):
                    self.log.warning("%s: %s", self.task_id, describe_abort(abort, event.get("decided_at")))
                raise AirflowFailException(
                    f"the canary failed while waiting for approval at {self.current_weight} %: "
                    f"{event.get('reason')}"
                )
            return super().execute_complete(context, event)

"""Wait for a person's approval of a stage while the canary keeps being judged at its weight.

On Airflow 3.3 an ``ApprovalOperator`` parks its task in ``awaiting_input`` with no
trigger: nothing watches the canary, which may take traffic for the whole approval
timeout. :class:`~opsdag.operators.stage_approval.StageApprovalOperator` defers to this
trigger instead, which runs two things at once and yields whichever decides first:

- the response polling of Airflow's HITLTrigger (:mod:`opsdag.triggers.hitl_response`):
  the recorded response, or the response timeout (its defaults, or a timeout error). On
  3.3 a response given in the UI or through the REST API (``PATCH .../hitlDetails``)
  resumes a *deferred* task at once by itself (the route calls ``handle_event_submit``
  for tasks in ``deferred`` or ``awaiting_input``): this trigger is then cancelled, and
  its polling only applies the timeout (and reads the response under ``dag.test()``).
- the gate's measuring loop (:class:`~opsdag.triggers.analysis_run.AnalysisRun`) with no
  window end: only a failing verdict ends it. Then, with ``abort``, the trigger takes
  traffic off the canary through the router before its event goes out.

The event is the HITL payload as Airflow's trigger yields it, or the verdict (``source:
"analysis"``, as an analysis trigger's event, with ``abort``). When both are ready at
once, the failing verdict wins: safety first.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from opsdag.hooks.prometheus import DEFAULT_TIMEOUT, PrometheusHook
from opsdag.triggers.hitl_response import wait_for_answer
from opsdag.triggers.traffic_abort import check_abort, measuring

ANALYSIS_SOURCE = "analysis"


class ApprovalWatchTrigger(BaseTrigger):
    """A stage's approval and its canary's analysis, raced; the first to decide is the event.

    :param hitl: what Airflow's ``HITLTrigger`` takes (``ti_id``, ``options``, ``params``,
        ``defaults``, ``multiple``, ``timeout_datetime``, ``poke_interval``).
    :param gate: the name in messages, e.g. ``stage_50.approval``.
    :param metrics: the analysis metrics, as ``Metric.model_dump(mode="json")`` dicts.
    :param selectors: label matchers for ``$canary`` and ``$stable``.
    :param compare_with_stable: false when the canary takes all the traffic.
    :param prometheus_conn_id: the Airflow connection of the Prometheus server.
    :param query_timeout: seconds for one query.
    :param abort: ``{"service": <ServiceSpec JSON>, "action": ...}``: done on a failing verdict
        before the event goes out (see :mod:`opsdag.triggers.traffic_abort`). None: no abort.
    """

    def __init__(
        self,
        *,
        hitl: dict[str, Any],
        gate: str,
        metrics: list[dict[str, Any]],
        selectors: dict[str, str],
        compare_with_stable: bool = True,
        prometheus_conn_id: str = PrometheusHook.default_conn_name,
        query_timeout: float = DEFAULT_TIMEOUT,
        abort: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.hitl = dict(hitl)
        self.gate = gate
        self.metrics = [dict(m) for m in metrics]
        self.selectors = dict(selectors)
        self.compare_with_stable = compare_with_stable
        self.prometheus_conn_id = prometheus_conn_id
        self.query_timeout = query_timeout
        self.abort = check_abort(abort)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "hitl": self.hitl,
                "gate": self.gate,
                "metrics": self.metrics,
                "selectors": self.selectors,
                "compare_with_stable": self.compare_with_stable,
                "prometheus_conn_id": self.prometheus_conn_id,
                "query_timeout": self.query_timeout,
                "abort": self.abort,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        analysis, traffic = await measuring(self)
        # The canary has taken this weight since the previous stage: no initial delay to wait out.
        watch = asyncio.ensure_future(
            analysis.until_final(window_start=None, window_end=math.inf, initial_delays=False)
        )
        answer = asyncio.ensure_future(self._answer())
        try:
            await asyncio.wait({watch, answer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watch, answer):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if watch.done() and not watch.cancelled():
            verdict = watch.result()
            payload = {"source": ANALYSIS_SOURCE, **analysis.payload(verdict)}
            payload["abort"] = await traffic.perform() if traffic else None
            yield TriggerEvent(payload)
            return
        yield TriggerEvent(answer.result())

    async def _answer(self) -> dict[str, Any]:
        """The person's answer (or the timeout's), as Airflow's HITLTrigger yields it."""
        return await wait_for_answer(**self.hitl, log=self.log)

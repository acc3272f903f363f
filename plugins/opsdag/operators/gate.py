"""The health gate of one canary stage: judge the canary on real metrics while it bakes.

The operator is thin: it checks its inputs and that Prometheus answers, then defers to
:class:`~opsdag.triggers.analysis.AnalysisTrigger` for the bake window (no worker slot
held while waiting), and on the trigger's event pushes the verdict and fails the task
unless the gate passed. The verdict itself is decided by :mod:`opsdag.analysis.judge`.

With ``abort_action``, the trigger itself takes traffic off the new version when the
verdict fails, before its event goes out (see :mod:`opsdag.triggers.traffic_abort`); the
verdict's ``abort`` says what it did, and the rollback task repeats it and cleans up.

Safe to retry: every try judges a fresh bake window from the moment it starts; the
only change it can make is the (idempotent) abort.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from opsdag.analysis.query import render_query
from opsdag.analysis.summary import MetricSummary, summary_text
from opsdag.hooks.prometheus import DEFAULT_TIMEOUT, PrometheusHook
from opsdag.operators.run_state import RecordsItsError
from opsdag.spec.common import parse_duration
from opsdag.spec.service import Analysis, ServiceSpec
from opsdag.triggers.analysis import AnalysisTrigger
from opsdag.triggers.traffic_abort import abort_request, describe_abort

# The trigger decides at the window's end; this margin covers a last slow query and a
# busy triggerer before Airflow gives up on the deferral itself.
DEFER_MARGIN = timedelta(minutes=2)


class HealthGateOperator(RecordsItsError, BaseOperator):
    """Judge a canary stage on its service's analysis metrics for a bake window.

    The verdict is pushed as the XCom ``verdict``: ``{"gate", "phase", "reason",
    "metrics": [per-metric summary], "measurements": [the last few], "decided_at",
    "abort": {"action", "started_at", "done_at", "split_after", "error"[, "note"]} | None, ...}``,
    also when the gate fails, so a rollback or report task can say why.

    :param service: the service's spec: its ``analysis`` is what the gate judges, and its
        router is what an abort acts on.
    :param weight: the canary's share of traffic during this stage, in percent (for names and logs).
    :param bake: how long to judge the canary: ``30s``, ``5m``, seconds, or a timedelta.
    :param selectors: label matchers for ``$canary``/``$stable``, from ``WorkloadDriver.metric_selectors()``.
    :param gate_name: the gate's name in messages; ``stage_<weight>`` by default.
    :param abort_action: what the trigger does to traffic on a failing verdict: ``weight_zero``,
        ``switch_back`` or ``preview_off``; None (default): nothing (the rollback task does it).
    :param prometheus_conn_id: overrides the analysis' ``prometheus_conn_id``.
    :param query_timeout: seconds for one Prometheus query.
    """

    template_fields: Sequence[str] = ("selectors", "gate_name")
    template_fields_renderers = {"selectors": "json"}
    ui_color = "#fbe9c8"

    def __init__(
        self,
        *,
        service: ServiceSpec,
        weight: int,
        bake: timedelta | str | float,
        selectors: dict[str, str],
        gate_name: str | None = None,
        abort_action: str | None = None,
        prometheus_conn_id: str | None = None,
        query_timeout: float = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Checked now (pure, no I/O) so that a bad spec or action breaks the DAG at parse, not mid-release.
        self.service = ServiceSpec.model_validate(service)
        abort_request(self.service, abort_action)  # an unknown action is refused here
        self.abort_action = abort_action
        self.weight = weight
        self.bake = parse_duration(bake)
        self.selectors = selectors
        self.gate_name = gate_name or f"stage_{weight}"
        self.prometheus_conn_id = prometheus_conn_id
        self.query_timeout = query_timeout

    @property
    def analysis(self) -> Analysis:
        return self.service.analysis

    @cached_property
    def hook(self) -> PrometheusHook:
        conn_id = self.prometheus_conn_id or self.analysis.prometheus_conn_id
        return PrometheusHook(conn_id, timeout=self.query_timeout)

    def run(self, context: Any) -> None:
        analysis = self.analysis
        for metric in analysis.metrics:
            for query in filter(None, (metric.query, metric.baseline_query)):
                try:
                    render_query(query, self.selectors)
                except ValueError as exc:
                    raise AirflowFailException(f"gate {self.gate_name}: metric {metric.name}: {exc}") from exc
        ok, message = self.hook.test_connection()
        if not ok:
            # Retryable: the canary has not been judged at all. The verdict says why, for the
            # report, if no retry is left and the release rolls back.
            reason = f"no data: Prometheus cannot be queried ({message}); never promoted on missing data"
            context["ti"].xcom_push(
                key="verdict",
                value={
                    "gate": self.gate_name,
                    "phase": "inconclusive",
                    "reason": reason,
                    "weight": self.weight,
                },
            )
            raise AirflowException(f"gate {self.gate_name} cannot start: {message}")
        window_end = datetime.now(UTC) + self.bake
        self.log.info(
            "Gate %s: judging the canary at %d %% for %s (until %s) on %s via %s; on failure: %s",
            self.gate_name,
            self.weight,
            self.bake,
            window_end.isoformat(timespec="seconds"),
            ", ".join(m.name for m in analysis.metrics),
            self.hook.base_url,
            f"{self.abort_action} in the triggerer" if self.abort_action else "the rollback task",
        )
        self.defer(
            trigger=AnalysisTrigger(
                gate=self.gate_name,
                metrics=[m.model_dump(mode="json") for m in analysis.metrics],
                selectors=dict(self.selectors),
                window_end=window_end.timestamp(),
                window_start=(window_end - self.bake).timestamp(),
                compare_with_stable=self.weight < 100,
                prometheus_conn_id=self.hook.prometheus_conn_id,
                query_timeout=self.query_timeout,
                abort=abort_request(self.service, self.abort_action),
            ),
            method_name="execute_complete",
            timeout=self.bake + DEFER_MARGIN,
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> None:
        """Push the verdict; fail without retry unless the gate passed (the verdict is final)."""
        verdict = {**event, "weight": self.weight}
        context["ti"].xcom_push(key="verdict", value=verdict)
        lines = summary_text(MetricSummary.from_dict(m) for m in event.get("metrics", []))
        if abort := event.get("abort"):
            self.log.warning("Gate %s: %s", self.gate_name, describe_abort(abort, event.get("decided_at")))
        if event.get("phase") != "pass":
            self.log.error("Gate %s failed:\n%s", self.gate_name, lines)
            raise AirflowFailException(f"gate {self.gate_name} failed: {event.get('reason')}")
        self.log.info("Gate %s passed:\n%s", self.gate_name, lines)

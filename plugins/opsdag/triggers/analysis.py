"""Bake a canary: measure its metrics every interval until one fails or the window ends.

The trigger runs in the triggerer, so a bake window of minutes holds no worker slot.
It only collects numbers (:mod:`opsdag.triggers.analysis_run`); :mod:`opsdag.analysis.judge`
decides. It fires one event:

- as soon as the gate fails (a metric over its failure or inconclusive limit, or a
  query error): detection time is what limits the harm of a bad canary; with ``abort``
  the trigger first takes traffic off the new version through the router
  (:mod:`opsdag.triggers.traffic_abort`), so safety does not wait for the scheduler;
- when the bake window ends: ``pass`` only if every metric had a passing measurement
  and none went over a limit (nothing is aborted on a pass).

The window's end is an absolute time in the serialized kwargs, so a triggerer that
restarts resumes the same window instead of starting a new one (the measurements taken
before the restart are lost; the metrics are measured again at once). The kwargs hold
connection ids and the service spec's JSON, never credentials: they are stored in the
metadata database, and the hook and the router resolve connections themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from opsdag.hooks.prometheus import DEFAULT_TIMEOUT, PrometheusHook
from opsdag.triggers.traffic_abort import check_abort, measuring


class AnalysisTrigger(BaseTrigger):
    """Measure a canary's metrics in Prometheus until the gate decides.

    :param gate: the gate's name in messages, e.g. ``stage_10``.
    :param metrics: the analysis metrics, as ``Metric.model_dump(mode="json")`` dicts.
    :param selectors: label matchers for ``$canary`` and ``$stable`` (``WorkloadDriver.metric_selectors()``).
    :param window_end: when the bake window ends: epoch seconds, or an aware datetime / ISO text.
    :param compare_with_stable: false when the canary takes all the traffic: ratios to stable are
        not checked then (stable has no traffic to compare with).
    :param window_start: when the bake window started (epoch seconds); initial delays count from
        it, so a triggerer that picks the trigger up late does not push measurements past the end.
    :param prometheus_conn_id: the Airflow connection of the Prometheus server.
    :param query_timeout: seconds for one query; an unanswered query is an inconclusive measurement.
    :param abort: ``{"service": <ServiceSpec JSON>, "action": "weight_zero" | "switch_back" |
        "preview_off"}``: on a final non-pass verdict, do that through the service's router
        before the event goes out; the event's ``abort`` says what was done. None: no abort.
    """

    def __init__(
        self,
        *,
        gate: str,
        metrics: list[dict[str, Any]],
        selectors: dict[str, str],
        window_end: float | str | datetime,
        window_start: float | None = None,
        compare_with_stable: bool = True,
        prometheus_conn_id: str = PrometheusHook.default_conn_name,
        query_timeout: float = DEFAULT_TIMEOUT,
        abort: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.gate = gate
        self.metrics = [dict(m) for m in metrics]
        self.selectors = dict(selectors)
        self.window_end = _epoch(window_end)
        self.window_start = window_start
        self.compare_with_stable = compare_with_stable
        self.prometheus_conn_id = prometheus_conn_id
        self.query_timeout = query_timeout
        self.abort = check_abort(abort)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "gate": self.gate,
                "metrics": self.metrics,
                "selectors": self.selectors,
                "window_end": self.window_end,
                "window_start": self.window_start,
                "compare_with_stable": self.compare_with_stable,
                "prometheus_conn_id": self.prometheus_conn_id,
                "query_timeout": self.query_timeout,
                "abort": self.abort,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        analysis, traffic = await measuring(self)
        verdict = await analysis.until_final(window_start=self.window_start, window_end=self.window_end)
        payload = analysis.payload(verdict)
        payload["abort"] = await traffic.perform() if traffic and verdict.phase != "pass" else None
        yield TriggerEvent(payload)


def _epoch(value: float | str | datetime) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("window_end must be timezone-aware")
        return value.timestamp()
    if isinstance(value, str):
        return _epoch(datetime.fromisoformat(value))
    return float(value)

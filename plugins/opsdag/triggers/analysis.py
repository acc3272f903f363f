"""Bake a canary: measure its metrics every interval until one fails or the window ends.

The trigger runs in the triggerer, so a bake window of minutes holds no worker slot.
It only collects numbers; :mod:`opsdag.analysis.judge` decides. It fires one event:

- as soon as the gate fails (a metric over its failure or inconclusive limit, or a
  query error): detection time is what limits the harm of a bad canary;
- when the bake window ends: ``pass`` only if every metric had a passing measurement
  and none went over a limit.

The window's end is an absolute time in the serialized kwargs, so a triggerer that
restarts resumes the same window instead of starting a new one (the measurements taken
before the restart are lost; the metrics are measured again at once). The kwargs hold
the connection id, never credentials: they are stored in the metadata database, and the
hook reads the connection itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from opsdag.analysis.judge import Measurement, gate_phase, is_final, measure, no_data, query_error
from opsdag.analysis.query import render_query
from opsdag.analysis.summary import summarize
from opsdag.hooks.prometheus import (
    DEFAULT_TIMEOUT,
    PrometheusHook,
    PrometheusQueryError,
    PrometheusUnavailable,
)
from opsdag.spec.service import Metric

# Measurements per metric carried in the event: enough to see a trend, small enough for the DB.
RECENT_PER_METRIC = 5


class AnalysisTrigger(BaseTrigger):
    """Measure a canary's metrics in Prometheus until the gate decides.

    :param gate: the gate's name in messages, e.g. ``stage_10``.
    :param metrics: the analysis metrics, as ``Metric.model_dump(mode="json")`` dicts.
    :param selectors: label matchers for ``$canary`` and ``$stable`` (``Platform.metric_selectors()``).
    :param window_end: when the bake window ends: epoch seconds, or an aware datetime / ISO text.
    :param compare_with_stable: false when the canary takes all the traffic: ratios to stable are
        not checked then (stable has no traffic to compare with).
    :param window_start: when the bake window started (epoch seconds); initial delays count from
        it, so a triggerer that picks the trigger up late does not push measurements past the end.
    :param prometheus_conn_id: the Airflow connection of the Prometheus server.
    :param query_timeout: seconds for one query; an unanswered query is an inconclusive measurement.
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
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        metrics = [Metric.model_validate(m) for m in self.metrics]
        hook = PrometheusHook(self.prometheus_conn_id, timeout=self.query_timeout)
        measurements: list[Measurement] = []
        self._started_at = time.time()
        start = self.window_start or self._started_at
        # A metric with an initial delay is first measured once fresh traffic has reached the stage.
        next_due = {
            m.name: start + (m.initial_delay.total_seconds() if m.initial_delay else 0) for m in metrics
        }
        last_chance_taken = False
        self.log.info(
            "Gate %s: measuring %s until %s",
            self.gate,
            ", ".join(m.name for m in metrics),
            datetime.fromtimestamp(self.window_end).astimezone().isoformat(timespec="seconds"),
        )
        while True:
            now = time.time()
            due = [m for m in metrics if next_due[m.name] <= now]
            taken = await asyncio.gather(*(self._measure(hook, m) for m in due))
            for metric, measurement in zip(due, taken, strict=True):
                next_due[metric.name] = max(next_due[metric.name] + metric.interval.total_seconds(), now)
                self.log.info("Gate %s: %s: %s", self.gate, measurement.phase, measurement.reason)
            measurements.extend(taken)
            window_ended = time.time() >= self.window_end
            measured = {m.metric for m in measurements}
            unmeasured = [m for m in metrics if m.name not in measured]
            if window_ended and unmeasured and not last_chance_taken:
                # A late start (busy triggerer) must not fail a gate for lack of a chance to measure.
                last_chance_taken = True
                for metric in unmeasured:
                    next_due[metric.name] = time.time()
                continue
            phase, reason = gate_phase(metrics, measurements, window_ended=window_ended)
            if is_final(phase):
                self.log.info("Gate %s: %s: %s", self.gate, phase, reason)
                yield TriggerEvent(self._payload(metrics, measurements, phase, reason, window_ended))
                return
            wake = min(min(next_due.values()), self.window_end)
            await asyncio.sleep(max(0.0, wake - time.time()))

    async def _measure(self, hook: PrometheusHook, metric: Metric) -> Measurement:
        """Query the canary (and the stable baseline) and judge; a failure to query is data too."""
        try:
            promql = {"value": render_query(metric.query, self.selectors)}
            if metric.baseline_query and self.compare_with_stable:
                promql["baseline"] = render_query(metric.baseline_query, self.selectors)
            if metric.requests_query:
                promql["requests"] = render_query(metric.requests_query, self.selectors)
            values = dict(
                zip(
                    promql, await asyncio.gather(*(hook.async_query(q) for q in promql.values())), strict=True
                )
            )
        except PrometheusUnavailable as exc:
            return no_data(metric, str(exc))
        except (PrometheusQueryError, ValueError) as exc:
            return query_error(metric, str(exc))
        except Exception as exc:  # a gate must decide, not crash: an unknown failure fails it
            return query_error(metric, f"{type(exc).__name__}: {exc}")
        return measure(
            metric,
            values["value"],
            values.get("baseline"),
            compare_with_stable=self.compare_with_stable,
            requests=values.get("requests"),
        )

    def _payload(
        self,
        metrics: list[Metric],
        measurements: list[Measurement],
        phase: str,
        reason: str,
        window_ended: bool,
    ) -> dict[str, Any]:
        """The event: verdict, one summary per metric and the last few measurements (small)."""
        recent = []
        for metric in metrics:
            mine = [m for m in measurements if m.metric == metric.name]
            recent.extend(m.to_dict() for m in mine[-RECENT_PER_METRIC:])
        return {
            "gate": self.gate,
            "phase": phase,
            "reason": reason,
            "window_ended": window_ended,
            "started_at": getattr(self, "_started_at", None),
            "decided_at": time.time(),
            "metrics": [s.to_dict() for s in summarize(metrics, measurements, window_ended=window_ended)],
            "measurements": recent,
        }


def _epoch(value: float | str | datetime) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("window_end must be timezone-aware")
        return value.timestamp()
    if isinstance(value, str):
        return _epoch(datetime.fromisoformat(value))
    return float(value)

"""The measuring loop of a gate, shared by the bake window and the approval wait.

It only collects numbers; :mod:`opsdag.analysis.judge` decides. A bake window
(:class:`~opsdag.triggers.analysis.AnalysisTrigger`) ends with a verdict: failing as soon
as a metric goes over a limit, passing only at the window's end. An approval wait
(:class:`~opsdag.triggers.approval_watch.ApprovalWatchTrigger`) has no end of its own
(``window_end`` infinite): the loop returns only on a failing verdict, and the trigger
drops it when a person answers first.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opsdag.analysis.judge import Measurement, gate_phase, is_final, measure, no_data, query_error
from opsdag.analysis.query import render_query
from opsdag.analysis.summary import summarize
from opsdag.hooks.prometheus import PrometheusHook, PrometheusQueryError, PrometheusUnavailable
from opsdag.spec.service import Metric

# Measurements per metric carried in the event: enough to see a trend, small enough for the DB.
RECENT_PER_METRIC = 5


@dataclass
class Verdict:
    """How a run of measurements ended: its phase and reason, and when it was decided."""

    phase: str
    reason: str
    window_ended: bool
    decided_at: float
    measurements: list[Measurement] = field(default_factory=list)


class AnalysisRun:
    """Measure a canary's metrics every interval until the gate's phase is final.

    :param gate: the gate's name in messages, e.g. ``stage_10``.
    :param metrics: the analysis metrics.
    :param selectors: label matchers for ``$canary`` and ``$stable``.
    :param compare_with_stable: false when the canary takes all the traffic.
    :param hook: the Prometheus hook (its async queries).
    :param log: the trigger's logger.
    """

    def __init__(
        self,
        *,
        gate: str,
        metrics: list[Metric],
        selectors: dict[str, str],
        compare_with_stable: bool,
        hook: PrometheusHook,
        log: Any,
    ) -> None:
        self.gate = gate
        self.metrics = metrics
        self.selectors = selectors
        self.compare_with_stable = compare_with_stable
        self.hook = hook
        self.log = log
        self.started_at: float | None = None

    async def until_final(
        self, *, window_start: float | None, window_end: float, initial_delays: bool = True
    ) -> Verdict:
        """Measure until the phase is final; ``window_end`` infinite: until a failing phase.

        Initial delays count from ``window_start`` (default: now), so a triggerer that picks
        the trigger up late does not push measurements past the end. ``initial_delays``
        false: every metric is measured at once (the canary has had its traffic for a while).
        """
        metrics = self.metrics
        measurements: list[Measurement] = []
        self.started_at = time.time()
        start = window_start or self.started_at
        # A metric with an initial delay is first measured once fresh traffic has reached the stage.
        next_due = {
            m.name: start + (m.initial_delay.total_seconds() if m.initial_delay and initial_delays else 0)
            for m in metrics
        }
        last_chance_taken = False
        until = (
            "a failing verdict"
            if math.isinf(window_end)
            else datetime.fromtimestamp(window_end).astimezone().isoformat(timespec="seconds")
        )
        self.log.info("Gate %s: measuring %s until %s", self.gate, ", ".join(m.name for m in metrics), until)
        while True:
            now = time.time()
            due = [m for m in metrics if next_due[m.name] <= now]
            taken = await asyncio.gather(*(self._measure(m) for m in due))
            for metric, measurement in zip(due, taken, strict=True):
                next_due[metric.name] = max(next_due[metric.name] + metric.interval.total_seconds(), now)
                self.log.info("Gate %s: %s: %s", self.gate, measurement.phase, measurement.reason)
            measurements.extend(taken)
            window_ended = time.time() >= window_end
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
                return Verdict(phase, reason, window_ended, time.time(), measurements)
            wake = min(min(next_due.values()), window_end)
            await asyncio.sleep(max(0.0, wake - time.time()))

    async def _measure(self, metric: Metric) -> Measurement:
        """Query the canary (and the stable baseline) and judge; a failure to query is data too."""
        try:
            promql = {"value": render_query(metric.query, self.selectors)}
            if metric.baseline_query and self.compare_with_stable:
                promql["baseline"] = render_query(metric.baseline_query, self.selectors)
            if metric.requests_query:
                promql["requests"] = render_query(metric.requests_query, self.selectors)
            values = dict(
                zip(
                    promql,
                    await asyncio.gather(*(self.hook.async_query(q) for q in promql.values())),
                    strict=True,
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

    def payload(self, verdict: Verdict) -> dict[str, Any]:
        """The event: verdict, one summary per metric and the last few measurements (small)."""
        recent = []
        for metric in self.metrics:
            mine = [m for m in verdict.measurements if m.metric == metric.name]
            recent.extend(m.to_dict() for m in mine[-RECENT_PER_METRIC:])
        return {
            "gate": self.gate,
            "phase": verdict.phase,
            "reason": verdict.reason,
            "window_ended": verdict.window_ended,
            "started_at": self.started_at,
            "decided_at": verdict.decided_at,
            "metrics": [
                s.to_dict()
                for s in summarize(self.metrics, verdict.measurements, window_ended=verdict.window_ended)
            ],
            "measurements": recent,
        }

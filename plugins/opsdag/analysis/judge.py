"""The verdict of a health gate: measurements in, phases with their reasons out.

Pure functions with no Airflow import, in the manner of Argo Rollouts' ``analysis.go``:
the trigger only collects numbers and calls these; everything that decides whether a
canary is healthy lives here and is tested with tables of measurements.

Every verdict carries its reason in words with the numbers (which metric, what value,
which limit), because the same sentence ends up in the task log, the XCom, the release
report and the Slack message.

Phases
    A measurement is ``pass``, ``fail``, ``inconclusive`` (no data: an empty result,
    NaN, Prometheus unreachable) or ``error`` (Prometheus answered but the query cannot
    be judged: bad PromQL, several series where one value is needed).

    A metric, and a gate, is ``running``, ``pass``, ``fail`` or ``error``. Missing data
    never passes: inconclusive measurements past ``inconclusive_limit`` fail the metric,
    and so does a bake window that ends without one passing measurement.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from opsdag.format import number
from opsdag.spec.service import Metric

MeasurementPhase = Literal["pass", "fail", "inconclusive", "error"]
Phase = Literal["running", "pass", "fail", "error"]

# Worst last, as Argo's IsWorse: a gate is as bad as its worst metric.
_SEVERITY: dict[str, int] = {"pass": 0, "running": 1, "error": 2, "fail": 3}
NEVER_ON_MISSING_DATA = "never promoted on missing data"


@dataclass(frozen=True)
class Measurement:
    """One look at one metric: the canary's value, the stable baseline, and the judgement."""

    metric: str
    phase: MeasurementPhase
    reason: str
    value: float | None = None
    baseline: float | None = None
    at: float = 0.0  # seconds since the epoch

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (a non-finite number becomes its text, e.g. ``"inf"``)."""
        data = asdict(self)
        for key in ("value", "baseline"):
            if data[key] is not None and not math.isfinite(data[key]):
                data[key] = str(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        def number(x: Any) -> float | None:
            return None if x is None else float(x)

        return cls(
            metric=data["metric"],
            phase=data["phase"],
            reason=data["reason"],
            value=number(data.get("value")),
            baseline=number(data.get("baseline")),
            at=float(data.get("at", 0.0)),
        )


def describe_limits(metric: Metric) -> str:
    """The bounds of a metric in words: ``max 0.02, 2 x stable (floor 0.005)``."""
    parts = []
    if metric.max is not None:
        parts.append(f"max {number(metric.max)}")
    if metric.min is not None:
        parts.append(f"min {number(metric.min)}")
    if metric.max_ratio is not None:
        ratio = f"{number(metric.max_ratio)} x stable"
        if metric.baseline_floor:
            ratio += f" (floor {number(metric.baseline_floor)})"
        parts.append(ratio)
    return ", ".join(parts)


def measure(
    metric: Metric,
    value: float | None,
    baseline: float | None = None,
    *,
    at: float | None = None,
    compare_with_stable: bool = True,
    requests: float | None = None,
) -> Measurement:
    """Judge one canary ``value`` (and the stable ``baseline``) against the metric's bounds.

    Absolute bounds are checked first so that a canary over ``max`` fails even when the
    baseline is missing. ``max_ratio`` compares with ``max(baseline, baseline_floor)``:
    the floor keeps "2 x a stable error rate of 0" from failing on the first error.
    ``None`` (an empty result or NaN) is no data, hence inconclusive, never a pass.
    With ``compare_with_stable`` false (the canary takes all the traffic, so stable has no
    traffic to compare with) the ratio is not checked; the stages before it checked it.
    A metric with ``min_requests`` is inconclusive, never a pass, while the canary answered
    fewer ``requests`` than that: too little traffic proves nothing.
    """
    at = time.time() if at is None else at
    value = None if value is not None and math.isnan(value) else value
    baseline = None if baseline is not None and math.isnan(baseline) else baseline

    def result(phase: MeasurementPhase, reason: str) -> Measurement:
        return Measurement(metric.name, phase, reason, value, baseline, at)

    if value is None:
        return result("inconclusive", "no data: canary query returned an empty result or NaN")
    name, shown = metric.name, number(value)
    if metric.min_requests is not None and (requests is None or requests < metric.min_requests):
        counted = "no count" if requests is None else f"{number(requests)} requests"
        return result(
            "inconclusive",
            f"too little traffic: {name} {shown} on {counted} of the canary < min_requests "
            f"{metric.min_requests}",
        )
    if metric.max is not None and value > metric.max:
        return result("fail", f"{name} {shown} > max {number(metric.max)}")
    if metric.min is not None and value < metric.min:
        return result("fail", f"{name} {shown} < min {number(metric.min)}")
    within = []
    if metric.max is not None:
        within.append(f"max {number(metric.max)}")
    if metric.min is not None:
        within.append(f"min {number(metric.min)}")
    if metric.max_ratio is not None and not compare_with_stable:
        within.append("no ratio check (stable receives no traffic)")
    elif metric.max_ratio is not None:
        if baseline is None:
            return result(
                "inconclusive",
                f"no data: stable baseline query returned an empty result or NaN (canary {shown})",
            )
        ratio = number(metric.max_ratio)
        if baseline < metric.baseline_floor:
            floor = number(metric.baseline_floor)
            reference = f"floor {floor} (stable {number(baseline)} is below baseline_floor)"
            effective = metric.baseline_floor
        else:
            reference = f"stable {number(baseline)}"
            effective = baseline
        limit = metric.max_ratio * effective
        if value > limit:
            return result("fail", f"{name} {shown} > {ratio} x {reference} = {number(limit)} (ratio limit)")
        within.append(f"{ratio} x {reference} = {number(limit)}")
    return result("pass", f"{name} {shown} within {', '.join(within)}")


def no_data(metric: Metric, reason: str, *, at: float | None = None) -> Measurement:
    """An inconclusive measurement: the data could not be had (Prometheus down, timeout)."""
    text = reason if reason.startswith("no data") else f"no data: {reason}"
    return Measurement(metric.name, "inconclusive", text, at=time.time() if at is None else at)


def query_error(metric: Metric, reason: str, *, at: float | None = None) -> Measurement:
    """An error measurement: Prometheus answered, but the query cannot be judged as written."""
    text = reason if reason.startswith("query error") else f"query error: {reason}"
    return Measurement(metric.name, "error", text, at=time.time() if at is None else at)


def _named(metric: Metric, reason: str) -> str:
    return reason if reason.startswith(f"{metric.name} ") else f"{metric.name}: {reason}"


def metric_phase(
    metric: Metric, measurements: Iterable[Measurement], *, window_ended: bool = False
) -> tuple[Phase, str]:
    """The phase of one metric from its measurements (others' are ignored), with the reason.

    ``fail`` once failures > ``failure_limit`` or inconclusive > ``inconclusive_limit``;
    ``error`` on a query error (it will not heal by waiting); otherwise ``running`` until
    the bake window ends, then ``pass`` only with at least one passing measurement.
    """
    mine = [m for m in measurements if m.metric == metric.name]
    failed = [m for m in mine if m.phase == "fail"]
    inconclusive = [m for m in mine if m.phase == "inconclusive"]
    errors = [m for m in mine if m.phase == "error"]
    passed = [m for m in mine if m.phase == "pass"]
    if len(failed) > metric.failure_limit:
        return "fail", (
            f"{_named(metric, failed[-1].reason)} "
            f"(failures {len(failed)} > failure_limit {metric.failure_limit})"
        )
    if errors:
        return "error", _named(metric, errors[-1].reason)
    if len(inconclusive) > metric.inconclusive_limit:
        return "fail", _named(
            metric,
            f"inconclusive ({len(inconclusive)}) > inconclusive_limit ({metric.inconclusive_limit}), "
            f"last {inconclusive[-1].reason}; {NEVER_ON_MISSING_DATA}",
        )
    counts = f"{len(passed)} pass, {len(failed)} fail, {len(inconclusive)} inconclusive"
    if not window_ended:
        return "running", _named(metric, f"measuring ({counts})")
    if not passed:
        if not mine:
            return "fail", _named(metric, f"not measured in the bake window; {NEVER_ON_MISSING_DATA}")
        return "fail", _named(
            metric,
            f"no passing measurement in the bake window ({counts}), "
            f"last {mine[-1].reason}; {NEVER_ON_MISSING_DATA}",
        )
    return "pass", _named(metric, f"passed ({counts}), last {passed[-1].reason}")


def gate_phase(
    metrics: Sequence[Metric], measurements: Iterable[Measurement], *, window_ended: bool = False
) -> tuple[Phase, str]:
    """The gate's phase: the worst of its metrics; the reason names every metric at that phase."""
    measurements = list(measurements)
    if not metrics:
        return "fail", "the gate has no metrics to judge; " + NEVER_ON_MISSING_DATA
    phases = [metric_phase(m, measurements, window_ended=window_ended) for m in metrics]
    worst = max((phase for phase, _ in phases), key=_SEVERITY.__getitem__)
    reasons = [reason for phase, reason in phases if phase == worst]
    if worst == "pass":
        return "pass", f"all {len(metrics)} metrics within limits: " + "; ".join(reasons)
    return worst, "; ".join(reasons)


def is_final(phase: Phase) -> bool:
    """Whether the gate has decided (a failing metric decides at once, before the window ends)."""
    return phase != "running"

"""The ``health_gate`` verify step, without Airflow: the service's release metrics judged on stable.

A release's gates judge the canary with the service's ``analysis.metrics``; after a
runbook's mitigation the version that serves is the stable one, so the gate reads the same
metrics with ``$canary`` (and ``$stable``) standing for the stable track's matchers, and
judges them with the release analysis code (:func:`opsdag.analysis.judge.measure`, each metric
against its bounds). Only absolute bounds (``max``,
``min``) are judged: the ratio to stable has nothing to compare with, so a metric with a
ratio only (e.g. latency ``2 x stable``) is left out and named. A round passes when every
judged metric passes in it; no data never passes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from opsdag.analysis.judge import Measurement, Phase, measure, no_data, query_error
from opsdag.analysis.query import render_query
from opsdag.spec.service import Metric


class GateMisconfigured(ValueError):
    """The step names a metric the service does not have, or no metric has an absolute bound."""


@dataclass(frozen=True)
class GateMetrics:
    judged: list[Metric]
    left_out: list[str]  # "<name> (why)"


def gate_metrics(metrics: Sequence[Metric], names: Sequence[str] | None) -> GateMetrics:
    """The metrics the gate judges: ``names`` (all of the service's when None) with max or min."""
    by_name = {m.name: m for m in metrics}
    if names is not None:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise GateMisconfigured(
                f"no analysis metric named {', '.join(map(repr, unknown))} in the service's spec; "
                f"it has: {', '.join(by_name)}"
            )
        chosen = [by_name[n] for n in names]
    else:
        chosen = list(metrics)
    judged = [m for m in chosen if m.max is not None or m.min is not None]
    left_out = [f"{m.name} (no max or min: only a ratio to stable)" for m in chosen if m not in judged]
    if not judged:
        raise GateMisconfigured(
            "none of the metrics has an absolute bound (max or min) to judge the stable track with: "
            + ", ".join(left_out)
        )
    return GateMetrics(judged, left_out)


def on_stable(query: str, selectors: Mapping[str, str]) -> str:
    """``query`` with ``$canary`` and ``$stable`` both selecting the stable track."""
    stable = selectors.get("stable", "")
    return render_query(query, {"canary": stable, "stable": stable})


class QueryFailed(Exception):
    """Prometheus answered that the query cannot be judged as written (bad PromQL, several series)."""


def measure_round(
    metrics: Sequence[Metric],
    selectors: Mapping[str, str],
    read: Callable[[str], float | None],
    *,
    at: float | None = None,
) -> list[Measurement]:
    """One measurement per metric: ``read(promql)`` gives a value, None (no data), raises
    ``QueryFailed`` (an error measurement) or anything else (no data: Prometheus unreachable)."""
    round_: list[Measurement] = []
    for metric in metrics:
        try:
            value = read(on_stable(metric.query, selectors))
            requests = None
            if metric.min_requests is not None and metric.requests_query:
                requests = read(on_stable(metric.requests_query, selectors))
            absolute = metric.model_copy(update={"max_ratio": None})  # nothing to compare with
            round_.append(measure(absolute, value, at=at, compare_with_stable=False, requests=requests))
        except QueryFailed as exc:
            round_.append(query_error(metric, str(exc), at=at))
        except Exception as exc:  # unreachable: no data, never a pass
            round_.append(no_data(metric, f"{type(exc).__name__}: {exc}", at=at))
    return round_


def round_verdict(measurements: Sequence[Measurement]) -> tuple[Phase, str]:
    """``pass`` when every metric passed in this round; ``error`` on a query error (waiting will
    not heal it); else ``fail``, naming each metric that did not pass (no data included)."""
    if not measurements:
        return "fail", "no metric measured"
    errors = [m.reason for m in measurements if m.phase == "error"]
    if errors:
        return "error", "; ".join(errors)
    short = [m for m in measurements if m.phase != "pass"]
    if short:
        return "fail", "; ".join(
            f"{m.metric}: {m.reason}" if m.phase == "inconclusive" else m.reason for m in short
        )
    return "pass", f"all {len(measurements)} metric(s) within limits: " + "; ".join(
        m.reason for m in measurements
    )

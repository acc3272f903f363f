"""The health gate's judge, as tables: measurements in, phases and reasons (with numbers) out."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from opsdag.analysis.judge import (
    Measurement,
    describe_limits,
    gate_phase,
    measure,
    metric_phase,
    no_data,
    query_error,
)
from opsdag.analysis.query import render_query
from opsdag.analysis.summary import MetricSummary, summarize, summary_text
from opsdag.spec.service import Metric


def metric(name: str = "error-rate", **bounds) -> Metric:
    """A metric as in a service spec; ``max_ratio`` brings its baseline query along."""
    fields = {"name": name, "query": "x{$canary}", **bounds}
    if "max_ratio" in bounds:
        fields["baseline_query"] = "x{$stable}"
    return Metric(**fields)


ERRORS = metric("error-rate", max=0.02, max_ratio=2, baseline_floor=0.005)
LATENCY = metric("latency-p95", max_ratio=2, baseline_floor=0.05, failure_limit=1)
UP = metric("availability", min=1)


# -- one measurement -----------------------------------------------------------------------

MEASURE_CASES = [
    # (id, metric, canary, stable, phase, reason)
    ("over max", metric(max=0.02), 0.081, None, "fail", "error-rate 0.081 > max 0.02"),
    ("at max is within", metric(max=0.02), 0.02, None, "pass", "error-rate 0.02 within max 0.02"),
    ("under max", metric(max=0.02), 0.004, None, "pass", "error-rate 0.004 within max 0.02"),
    ("under min", UP, 0.5, None, "fail", "availability 0.5 < min 1"),
    ("at min", UP, 1.0, None, "pass", "availability 1 within min 1"),
    (
        "over 2 x stable",
        LATENCY,
        0.61,
        0.12,
        "fail",
        "latency-p95 0.61 > 2 x stable 0.12 = 0.24 (ratio limit)",
    ),
    ("within 2 x stable", LATENCY, 0.2, 0.12, "pass", "latency-p95 0.2 within 2 x stable 0.12 = 0.24"),
    (
        "floor lifts a tiny baseline: pass",
        ERRORS,
        0.008,
        0.001,
        "pass",
        "error-rate 0.008 within max 0.02, 2 x floor 0.005 (stable 0.001 is below baseline_floor) = 0.01",
    ),
    (
        "floor lifts a tiny baseline: fail",
        ERRORS,
        0.015,
        0.001,
        "fail",
        "error-rate 0.015 > 2 x floor 0.005 (stable 0.001 is below baseline_floor) = 0.01 (ratio limit)",
    ),
    (
        "stable error rate 0 and no floor: any error fails",
        metric(max_ratio=2),
        0.0001,
        0.0,
        "fail",
        "error-rate 0.0001 > 2 x stable 0 = 0 (ratio limit)",
    ),
    (
        "stable error rate 0 and no floor: 0 passes",
        metric(max_ratio=2),
        0.0,
        0.0,
        "pass",
        "error-rate 0 within 2 x stable 0 = 0",
    ),
    (
        "ratio above the floor uses stable",
        ERRORS,
        0.019,
        0.009,
        "fail",
        "error-rate 0.019 > 2 x stable 0.009 = 0.018 (ratio limit)",
    ),
    ("absolute limit before ratio", ERRORS, 0.03, 0.5, "fail", "error-rate 0.03 > max 0.02"),
    (
        "no canary data",
        ERRORS,
        None,
        0.001,
        "inconclusive",
        "no data: canary query returned an empty result or NaN",
    ),
    (
        "no baseline for a ratio",
        LATENCY,
        0.1,
        None,
        "inconclusive",
        "no data: stable baseline query returned an empty result or NaN (canary 0.1)",
    ),
    ("no baseline but over max fails anyway", ERRORS, 0.5, None, "fail", "error-rate 0.5 > max 0.02"),
    ("baseline unused without a ratio", metric(max=1), 0.5, None, "pass", "error-rate 0.5 within max 1"),
    ("infinite latency", metric("latency-p95", max=2), math.inf, None, "fail", "latency-p95 inf > max 2"),
]


@pytest.mark.parametrize(
    ("spec", "canary", "stable", "phase", "reason"),
    [case[1:] for case in MEASURE_CASES],
    ids=[case[0] for case in MEASURE_CASES],
)
def test_measure(spec: Metric, canary, stable, phase: str, reason: str) -> None:
    measured = measure(spec, canary, stable, at=1.0)
    assert (measured.phase, measured.reason) == (phase, reason)
    assert (measured.metric, measured.value, measured.baseline, measured.at) == (
        spec.name,
        canary,
        stable,
        1.0,
    )


def test_unreachable_and_broken_queries_have_their_own_phases() -> None:
    down = no_data(ERRORS, "Prometheus unreachable at http://127.0.0.1:1 (ConnectError: refused)", at=2.0)
    assert down.phase == "inconclusive"
    assert down.reason == "no data: Prometheus unreachable at http://127.0.0.1:1 (ConnectError: refused)"
    broken = query_error(ERRORS, "the query returned 2 series; aggregate it", at=2.0)
    assert (broken.phase, broken.reason) == (
        "error",
        "query error: the query returned 2 series; aggregate it",
    )


# -- one metric over a bake window -----------------------------------------------------------


def seq(spec: Metric, *phases: str) -> list[Measurement]:
    """Measurements of ``spec`` with the given phases, with plausible numbers and reasons."""
    good, bad = (spec.min, 0.0) if spec.min is not None else (0.001, 0.081)
    made = {
        "pass": lambda: measure(spec, good, 0.001),
        "fail": lambda: measure(spec, bad, 0.001),
        "inconclusive": lambda: measure(spec, None, 0.001),
        "error": lambda: query_error(spec, "bad_data: parse error"),
    }
    return [made[p]() for p in phases]


PHASE_CASES = [
    # (id, metric, measurement phases, window ended, phase, reason)
    (
        "first failure over failure_limit 0 fails at once",
        ERRORS,
        ["pass", "fail"],
        False,
        "fail",
        "error-rate 0.081 > max 0.02 (failures 1 > failure_limit 0)",
    ),
    (
        "one failure within failure_limit 1 keeps running",
        metric(max=0.02, failure_limit=1),
        ["pass", "fail", "pass"],
        False,
        "running",
        "error-rate: measuring (2 pass, 1 fail, 0 inconclusive)",
    ),
    (
        "one failure within failure_limit 1 passes at the end",
        metric(max=0.02, failure_limit=1),
        ["pass", "fail", "pass"],
        True,
        "pass",
        "error-rate: passed (2 pass, 1 fail, 0 inconclusive), last error-rate 0.001 within max 0.02",
    ),
    (
        "second failure over failure_limit 1",
        metric(max=0.02, failure_limit=1),
        ["fail", "pass", "fail"],
        False,
        "fail",
        "error-rate 0.081 > max 0.02 (failures 2 > failure_limit 1)",
    ),
    (
        "missing data past inconclusive_limit fails",
        metric(max=0.02, inconclusive_limit=2),
        ["pass", "inconclusive", "inconclusive", "inconclusive"],
        False,
        "fail",
        "error-rate: inconclusive (3) > inconclusive_limit (2), last no data: canary query returned "
        "an empty result or NaN; never promoted on missing data",
    ),
    (
        "missing data within the limit keeps running",
        metric(max=0.02, inconclusive_limit=2),
        ["inconclusive", "inconclusive"],
        False,
        "running",
        "error-rate: measuring (0 pass, 0 fail, 2 inconclusive)",
    ),
    (
        "only missing data to the end never passes",
        metric(max=0.02, inconclusive_limit=2),
        ["inconclusive", "inconclusive"],
        True,
        "fail",
        "error-rate: no passing measurement in the bake window (0 pass, 0 fail, 2 inconclusive), "
        "last no data: canary query returned an empty result or NaN; never promoted on missing data",
    ),
    (
        "not measured at all never passes",
        ERRORS,
        [],
        True,
        "fail",
        "error-rate: not measured in the bake window; never promoted on missing data",
    ),
    (
        "not measured yet is running",
        ERRORS,
        [],
        False,
        "running",
        "error-rate: measuring (0 pass, 0 fail, 0 inconclusive)",
    ),
    (
        "some missing data with passes passes",
        metric(max=0.02, inconclusive_limit=1),
        ["inconclusive", "pass", "pass"],
        True,
        "pass",
        "error-rate: passed (2 pass, 0 fail, 1 inconclusive), last error-rate 0.001 within max 0.02",
    ),
    (
        "a query error is an error at once",
        ERRORS,
        ["pass", "error"],
        False,
        "error",
        "error-rate: query error: bad_data: parse error",
    ),
    (
        "failure beats a query error",
        ERRORS,
        ["error", "fail"],
        False,
        "fail",
        "error-rate 0.081 > max 0.02 (failures 1 > failure_limit 0)",
    ),
    (
        "inconclusive_limit 0: the first gap fails",
        metric(max=0.02, inconclusive_limit=0),
        ["pass", "inconclusive"],
        False,
        "fail",
        "error-rate: inconclusive (1) > inconclusive_limit (0), last no data: canary query returned "
        "an empty result or NaN; never promoted on missing data",
    ),
]


@pytest.mark.parametrize(
    ("spec", "phases", "ended", "phase", "reason"),
    [case[1:] for case in PHASE_CASES],
    ids=[case[0] for case in PHASE_CASES],
)
def test_metric_phase(spec: Metric, phases: list[str], ended: bool, phase: str, reason: str) -> None:
    assert metric_phase(spec, seq(spec, *phases), window_ended=ended) == (phase, reason)


def test_metric_phase_ignores_other_metrics() -> None:
    others = seq(UP, "fail", "fail", "fail")
    assert metric_phase(ERRORS, others + seq(ERRORS, "pass"), window_ended=True)[0] == "pass"


# -- the gate: worst of its metrics ------------------------------------------------------------


def test_gate_is_the_worst_of_its_metrics_and_names_the_failing_one() -> None:
    measured = seq(ERRORS, "pass", "fail") + seq(LATENCY, "pass", "pass") + seq(UP, "pass")
    assert gate_phase([ERRORS, LATENCY, UP], measured) == (
        "fail",
        "error-rate 0.081 > max 0.02 (failures 1 > failure_limit 0)",
    )


def test_gate_names_every_failing_metric() -> None:
    measured = [*seq(ERRORS, "fail"), measure(UP, 0.0)]
    phase, reason = gate_phase([ERRORS, UP], measured)
    assert phase == "fail"
    assert reason == (
        "error-rate 0.081 > max 0.02 (failures 1 > failure_limit 0); "
        "availability 0 < min 1 (failures 1 > failure_limit 0)"
    )


def test_gate_runs_until_the_window_ends_then_passes() -> None:
    measured = [*seq(ERRORS, "pass", "pass"), measure(UP, 1.0)]
    assert gate_phase([ERRORS, UP], measured)[0] == "running"
    phase, reason = gate_phase([ERRORS, UP], measured, window_ended=True)
    assert phase == "pass"
    assert reason.startswith(
        "all 2 metrics within limits: error-rate: passed (2 pass, 0 fail, 0 inconclusive)"
    )


def test_gate_with_one_metric_never_measured_does_not_pass() -> None:
    measured = seq(ERRORS, "pass", "pass")
    assert gate_phase([ERRORS, UP], measured, window_ended=True) == (
        "fail",
        "availability: not measured in the bake window; never promoted on missing data",
    )


def test_gate_error_is_worse_than_running_but_not_than_fail() -> None:
    assert gate_phase([ERRORS, UP], seq(ERRORS, "error") + seq(UP, "pass"))[0] == "error"
    assert gate_phase([ERRORS, UP], [*seq(ERRORS, "error"), measure(UP, 0.0)])[0] == "fail"


def test_gate_without_metrics_does_not_pass() -> None:
    assert gate_phase([], [], window_ended=True)[0] == "fail"


# -- queries ---------------------------------------------------------------------------------

SELECTORS = {"canary": 'track="canary"', "stable": 'track="stable"'}


@pytest.mark.parametrize(
    ("query", "rendered"),
    [
        (
            'sum(rate(req{$canary, code=~"5.."}[15s])) / sum(rate(req{$canary}[15s]))',
            'sum(rate(req{track="canary", code=~"5.."}[15s])) / sum(rate(req{track="canary"}[15s]))',
        ),
        ("max(up{$stable})", 'max(up{track="stable"})'),
        ("$canaryish{$canary}", '$canaryish{track="canary"}'),
    ],
)
def test_render_query(query: str, rendered: str) -> None:
    assert render_query(query, SELECTORS) == rendered


def test_render_query_without_the_selector_it_needs() -> None:
    with pytest.raises(
        ValueError, match=r"uses \$stable but no 'stable' label matcher was given \(selectors: canary\)"
    ):
        render_query("max(up{$stable})", {"canary": 'track="canary"'})


# -- summaries for reports and Slack ---------------------------------------------------------


def test_summary_per_metric() -> None:
    measured = [measure(ERRORS, 0.004, 0.003), measure(ERRORS, None, 0.002), measure(ERRORS, 0.081, 0.002)]
    (summary,) = summarize([ERRORS], measured)
    assert summary == MetricSummary(
        metric="error-rate",
        phase="fail",
        reason="error-rate 0.081 > max 0.02 (failures 1 > failure_limit 0)",
        limit="max 0.02, 2 x stable (floor 0.005)",
        last_value=0.081,
        last_baseline=0.002,
        passed=1,
        failed=1,
        inconclusive=1,
        errors=0,
    )
    assert summary_text([summary]) == (
        "- error-rate fail: last 0.081 (stable 0.002), limit max 0.02, 2 x stable (floor 0.005); "
        "1 pass, 1 fail, 1 inconclusive"
    )
    assert MetricSummary.from_dict(summary.to_dict()) == summary


def test_limits_in_words() -> None:
    assert describe_limits(ERRORS) == "max 0.02, 2 x stable (floor 0.005)"
    assert describe_limits(UP) == "min 1"


def test_measurement_round_trips_through_json_even_when_infinite() -> None:
    measured = measure(metric("latency-p95", max=2), math.inf, None, at=5.0)
    data = measured.to_dict()
    assert data["value"] == "inf"
    assert Measurement.from_dict(data) == measured


def test_the_judge_imports_no_airflow() -> None:
    probe = "import sys, opsdag.analysis.judge, opsdag.analysis.summary, opsdag.analysis.query; "
    probe += "print(sorted(m for m in sys.modules if m.split('.')[0] == 'airflow'))"
    plugins = str(Path(__file__).resolve().parents[2] / "plugins")
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": plugins},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_at_100_percent_ratios_are_not_checked_but_absolute_bounds_are() -> None:
    # The canary takes all the traffic: stable has none to compare with.
    latency = measure(LATENCY, 0.9, None, compare_with_stable=False)
    assert latency.phase == "pass"
    assert "no ratio check (stable receives no traffic)" in latency.reason
    errors = measure(ERRORS, 0.05, None, compare_with_stable=False)
    assert (errors.phase, errors.reason) == ("fail", "error-rate 0.05 > max 0.02")
    # Before 100 %, a missing baseline stays inconclusive.
    assert measure(LATENCY, 0.9, None).phase == "inconclusive"

"""The judge's decisions that test_analysis.py leaves open, as tables of measurements.

Which measurement a verdict quotes, when a gate is final, how the worst metric is chosen
and named, how the time of a measurement is kept, and the exact words of the reasons
that end up in the task log, the report and Slack.
"""

from __future__ import annotations

import time

import pytest

from opsdag.analysis.judge import (
    Measurement,
    gate_phase,
    is_final,
    measure,
    metric_phase,
    no_data,
    query_error,
)
from opsdag.spec.service import Metric


def metric(name: str = "error-rate", **bounds) -> Metric:
    """A metric as in a service spec; ``max_ratio`` brings its baseline query along."""
    fields = {"name": name, "query": "x{$canary}", **bounds}
    if "max_ratio" in bounds:
        fields["baseline_query"] = "x{$stable}"
    return Metric(**fields)


# Generous limits, so that several failures or gaps can be seen before the metric fails.
PATIENT = metric("error-rate", max=0.02, failure_limit=5, inconclusive_limit=5)
ERRORS = metric("error-rate", max=0.02)
LATENCY = metric("latency-p95", max_ratio=2, baseline_floor=0.05)
UP = metric("availability", min=1)

NO_CANARY_DATA = "no data: canary query returned an empty result or NaN"


# -- which measurement the reason quotes: the last one of the deciding kind --------------------

QUOTE_CASES = [
    # (id, metric, measured values (None: no data, "error ...": a query error), window ended, verdict)
    (
        "too many failures: the last failure",
        metric(max=0.02, failure_limit=1),
        [0.03, 0.001, 0.081],
        False,
        ("fail", "error-rate 0.081 > max 0.02 (failures 2 > failure_limit 1)"),
    ),
    (
        "a broken query: the last error",
        ERRORS,
        ["error parse error at char 3", 0.001, "error the query returned 2 series"],
        False,
        ("error", "error-rate: query error: the query returned 2 series"),
    ),
    (
        "too many gaps: the last gap",
        metric(max=0.02, inconclusive_limit=1),
        ["down Prometheus unreachable", 0.001, None],
        False,
        (
            "fail",
            f"error-rate: inconclusive (2) > inconclusive_limit (1), last {NO_CANARY_DATA}; "
            "never promoted on missing data",
        ),
    ),
    (
        "no pass in the window: the last measurement of any kind",
        PATIENT,
        [0.03, None, 0.05],
        True,
        (
            "fail",
            "error-rate: no passing measurement in the bake window (0 pass, 2 fail, 1 inconclusive), "
            "last error-rate 0.05 > max 0.02; never promoted on missing data",
        ),
    ),
    (
        "no pass in the window, ending on a gap",
        PATIENT,
        [0.03, 0.05, None],
        True,
        (
            "fail",
            "error-rate: no passing measurement in the bake window (0 pass, 2 fail, 1 inconclusive), "
            f"last {NO_CANARY_DATA}; never promoted on missing data",
        ),
    ),
    (
        "passed: the last pass, even with a failure after it",
        PATIENT,
        [0.001, 0.004, 0.03],
        True,
        (
            "pass",
            "error-rate: passed (2 pass, 1 fail, 0 inconclusive), last error-rate 0.004 within max 0.02",
        ),
    ),
]


def measured(spec: Metric, values: list) -> list[Measurement]:
    """Measurements of ``spec``: a number is measured, None is no data, "error ..." and "down ..."
    are a query error and an unreachable Prometheus with that text."""
    made = []
    for at, value in enumerate(values):
        if isinstance(value, str) and value.startswith("error "):
            made.append(query_error(spec, value.removeprefix("error "), at=at))
        elif isinstance(value, str):
            made.append(no_data(spec, value.removeprefix("down "), at=at))
        else:
            made.append(measure(spec, value, at=at))
    return made


@pytest.mark.parametrize(
    ("spec", "values", "ended", "verdict"),
    [case[1:] for case in QUOTE_CASES],
    ids=[case[0] for case in QUOTE_CASES],
)
def test_the_reason_quotes_the_last_deciding_measurement(spec, values, ended, verdict) -> None:
    assert metric_phase(spec, measured(spec, values), window_ended=ended) == verdict


# -- when the gate has decided ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "final"), [("running", False), ("pass", True), ("fail", True), ("error", True)]
)
def test_only_running_is_not_final(phase, final) -> None:
    assert is_final(phase) is final


def test_the_window_is_open_unless_said_otherwise() -> None:
    passes = measured(ERRORS, [0.001, 0.002])
    assert metric_phase(ERRORS, passes) == (
        "running",
        "error-rate: measuring (2 pass, 0 fail, 0 inconclusive)",
    )
    assert gate_phase([ERRORS], passes)[0] == "running"


# -- the gate: the worst metric, named; all of them when it passes -----------------------------

WORST_CASES = [
    # (id, (metric, values) in the gate's order, window ended, verdict)
    (
        "a broken-query metric listed after a running one",
        [(ERRORS, [0.001]), (LATENCY, ["error bad_data: parse error"])],
        False,
        ("error", "latency-p95: query error: bad_data: parse error"),
    ),
    (
        "a broken-query metric listed before a running one",
        [(LATENCY, ["error bad_data: parse error"]), (ERRORS, [0.001])],
        False,
        ("error", "latency-p95: query error: bad_data: parse error"),
    ),
    (
        "a failing metric after a broken query",
        [(LATENCY, ["error bad_data: parse error"]), (ERRORS, [0.081])],
        False,
        ("fail", "error-rate 0.081 > max 0.02 (failures 1 > failure_limit 0)"),
    ),
    (
        "a failing metric after a running one",
        [(UP, [1.0]), (ERRORS, [0.081])],
        False,
        ("fail", "error-rate 0.081 > max 0.02 (failures 1 > failure_limit 0)"),
    ),
    (
        "a broken query after a passing metric at the end of the window",
        [(ERRORS, [0.001]), (LATENCY, ["error bad_data: parse error"])],
        True,
        ("error", "latency-p95: query error: bad_data: parse error"),
    ),
    (
        "two running metrics: both named, in the gate's order",
        [(UP, [1.0]), (ERRORS, [])],
        False,
        (
            "running",
            "availability: measuring (1 pass, 0 fail, 0 inconclusive); "
            "error-rate: measuring (0 pass, 0 fail, 0 inconclusive)",
        ),
    ),
    (
        "every metric passed: all of them in the reason",
        [(ERRORS, [0.001, 0.004]), (UP, [1.0])],
        True,
        (
            "pass",
            "all 2 metrics within limits: "
            "error-rate: passed (2 pass, 0 fail, 0 inconclusive), last error-rate 0.004 within max 0.02; "
            "availability: passed (1 pass, 0 fail, 0 inconclusive), last availability 1 within min 1",
        ),
    ),
]


@pytest.mark.parametrize(
    ("measured_metrics", "ended", "verdict"),
    [case[1:] for case in WORST_CASES],
    ids=[case[0] for case in WORST_CASES],
)
def test_the_gate_is_its_worst_metric(measured_metrics, ended, verdict) -> None:
    metrics = [spec for spec, _ in measured_metrics]
    measurements = [m for spec, values in measured_metrics for m in measured(spec, values)]
    assert gate_phase(metrics, measurements, window_ended=ended) == verdict


def test_a_gate_without_metrics_says_so() -> None:
    assert gate_phase([], [], window_ended=True) == (
        "fail",
        "the gate has no metrics to judge; never promoted on missing data",
    )


# -- the words at 100 % traffic ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "value", "reason"),
    [
        (LATENCY, 0.9, "latency-p95 0.9 within no ratio check (stable receives no traffic)"),
        (
            metric(max=0.02, max_ratio=2),
            0.01,
            "error-rate 0.01 within max 0.02, no ratio check (stable receives no traffic)",
        ),
    ],
)
def test_at_100_percent_the_reason_says_the_ratio_was_not_checked(spec, value, reason) -> None:
    judged = measure(spec, value, None, at=1.0, compare_with_stable=False)
    assert (judged.phase, judged.reason) == ("pass", reason)


# -- measurements without a number: what they say, for which metric, when ------------------------

NO_NUMBER_CASES = [
    # (id, make, reason given, phase, reason kept)
    ("Prometheus down", no_data, "Prometheus unreachable", "inconclusive", "no data: Prometheus unreachable"),
    (
        "already says no data",
        no_data,
        "no data: timeout after 5 s",
        "inconclusive",
        "no data: timeout after 5 s",
    ),
    ("bad PromQL", query_error, "parse error", "error", "query error: parse error"),
    ("already says query error", query_error, "query error: 2 series", "error", "query error: 2 series"),
]


@pytest.mark.parametrize(
    ("make", "given", "phase", "reason"),
    [case[1:] for case in NO_NUMBER_CASES],
    ids=[case[0] for case in NO_NUMBER_CASES],
)
def test_measurements_without_a_number(make, given, phase, reason) -> None:
    assert make(LATENCY, given, at=7.0) == Measurement("latency-p95", phase, reason, None, None, 7.0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: measure(ERRORS, 0.001),
        lambda: no_data(ERRORS, "Prometheus unreachable"),
        lambda: query_error(ERRORS, "parse error"),
    ],
    ids=["measure", "no_data", "query_error"],
)
def test_a_measurement_is_stamped_now_unless_told_when(make) -> None:
    before = time.time()
    stamped = make().at
    assert before <= stamped <= time.time()


# -- measurements through XCom (JSON) ----------------------------------------------------------


def test_a_measurement_comes_back_from_json_whole() -> None:
    judged = measure(LATENCY, 0.2, 0.12, at=1234.5)
    assert Measurement.from_dict(judged.to_dict()) == judged
    assert judged.to_dict() == {
        "metric": "latency-p95",
        "phase": "pass",
        "reason": "latency-p95 0.2 within 2 x stable 0.12 = 0.24",
        "value": 0.2,
        "baseline": 0.12,
        "at": 1234.5,
    }


def test_a_measurement_without_optional_fields_reads_as_no_data_at_time_zero() -> None:
    data = {"metric": "error-rate", "phase": "inconclusive", "reason": NO_CANARY_DATA}
    assert Measurement.from_dict(data) == Measurement(
        "error-rate", "inconclusive", NO_CANARY_DATA, None, None, 0.0
    )


# --- too little traffic and NaN: never a pass ------------------------------------------

BUSY = metric("error-rate", max=0.02, min_requests=50, requests_query="sum(x_total{$canary})")


@pytest.mark.parametrize(
    ("requests", "phase", "reason"),
    [
        (
            None,
            "inconclusive",
            "too little traffic: error-rate 0 on no count of the canary < min_requests 50",
        ),
        (
            12,
            "inconclusive",
            "too little traffic: error-rate 0 on 12 requests of the canary < min_requests 50",
        ),
        (
            49.9,
            "inconclusive",
            "too little traffic: error-rate 0 on 49.9 requests of the canary < min_requests 50",
        ),
        (50, "pass", "error-rate 0 within max 0.02"),
        (5000, "pass", "error-rate 0 within max 0.02"),
    ],
)
def test_a_metric_with_min_requests_is_inconclusive_on_too_little_traffic(requests, phase, reason) -> None:
    judged = measure(BUSY, 0.0, requests=requests, at=1.0)
    assert (judged.phase, judged.reason) == (phase, reason)


def test_a_failing_value_on_too_little_traffic_is_still_inconclusive_not_a_pass() -> None:
    assert measure(BUSY, 0.5, requests=3, at=1.0).phase == "inconclusive"
    assert measure(ERRORS, 0.5, requests=3, at=1.0).phase == "fail"  # no min_requests: the count is ignored


def test_nan_is_no_data_for_the_canary_and_for_the_baseline() -> None:
    nan = float("nan")
    assert (measure(ERRORS, nan, at=1.0).phase, measure(ERRORS, nan, at=1.0).reason) == (
        "inconclusive",
        NO_CANARY_DATA,
    )
    judged = measure(LATENCY, 0.08, nan, at=1.0)
    assert judged.phase == "inconclusive"
    assert "nan" not in judged.reason

"""``health_gate``: the service's release metrics, judged on the stable track by the release analysis code."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from opsdag.runbooks.health_gate import (
    GateMisconfigured,
    QueryFailed,
    gate_metrics,
    measure_round,
    on_stable,
    round_verdict,
)
from opsdag.spec.runbook import RunbookSpec
from opsdag.spec.service import ServiceSpec

INCLUDE = Path(__file__).resolve().parents[2] / "include"
DEMO_API = ServiceSpec.model_validate(yaml.safe_load((INCLUDE / "services" / "demo-api.yaml").read_text()))
SELECTORS = {
    "canary": 'service="demo-api", track="canary", version="1.1.0"',
    "stable": 'service="demo-api", track="stable"',
}


def test_only_metrics_with_an_absolute_bound_are_judged_and_the_others_named() -> None:
    chosen = gate_metrics(DEMO_API.analysis.metrics, None)
    assert [m.name for m in chosen.judged] == ["error-rate", "availability"]
    assert chosen.left_out == ["latency-p95 (no max or min: only a ratio to stable)"]
    assert [m.name for m in gate_metrics(DEMO_API.analysis.metrics, ["availability"]).judged] == [
        "availability"
    ]


def test_unknown_or_ratio_only_metrics_are_refused_naming_them() -> None:
    with pytest.raises(GateMisconfigured, match=r"no analysis metric named 'errors'.*it has: error-rate"):
        gate_metrics(DEMO_API.analysis.metrics, ["errors"])
    with pytest.raises(GateMisconfigured, match=r"none of the metrics has an absolute bound.*latency-p95"):
        gate_metrics(DEMO_API.analysis.metrics, ["latency-p95"])


def test_queries_select_the_stable_track() -> None:
    assert on_stable("min(up{$canary}) + min(up{$stable})", SELECTORS) == (
        'min(up{service="demo-api", track="stable"}) + min(up{service="demo-api", track="stable"})'
    )


def reader(values: dict[str, object]):
    """``read`` answering by metric: the value, or an exception to raise."""

    def read(promql: str) -> float | None:
        key = "availability" if promql.startswith("min(up") else "error-rate"
        assert 'track="stable"' in promql and "$" not in promql
        value = values[key]
        if isinstance(value, Exception):
            raise value
        return value

    return read


@pytest.mark.parametrize(
    ("values", "phase", "reason"),
    [
        (
            {"error-rate": 0.001, "availability": 1.0},
            "pass",
            "all 2 metric(s) within limits: error-rate 0.001 within max 0.02; availability 1 within min 1",
        ),
        ({"error-rate": 0.3, "availability": 1.0}, "fail", "error-rate 0.3 > max 0.02"),
        (
            {"error-rate": None, "availability": 0.0},
            "fail",
            "error-rate: no data: canary query returned an empty result or NaN; availability 0 < min 1",
        ),
        (
            {"error-rate": ConnectionError("refused"), "availability": 1.0},
            "fail",
            "error-rate: no data: ConnectionError: refused",
        ),
        (
            {"error-rate": QueryFailed("parse error at char 4"), "availability": 1.0},
            "error",
            "query error: parse error at char 4",
        ),
    ],
)
def test_a_round_passes_only_when_every_metric_passes(values, phase, reason) -> None:
    judged = gate_metrics(DEMO_API.analysis.metrics, None).judged
    measurements = measure_round(judged, SELECTORS, reader(values), at=1.0)
    assert round_verdict(measurements) == (phase, reason)


STEP = {
    "action": "health_gate",
    "name": "verify-health",
    "service": "demo-api",
    "timeout": "1s",
    "interval": "200ms",
}


def test_the_spec_step_is_a_verify_that_changes_nothing() -> None:
    spec = RunbookSpec.model_validate({"name": "r", "alerts": ["ServiceDown"], "steps": [STEP]})
    [step] = spec.steps
    assert (step.step_kind, step.destructive, step.metrics, step.timeout) == (
        "verify",
        False,
        None,
        timedelta(seconds=1),
    )


def operator(monkeypatch, values: dict[str, object]):
    from opsdag.hooks.prometheus import PrometheusHook
    from opsdag.operators.runbook_service import HealthGateOperator

    spec = RunbookSpec.model_validate({"name": "r", "alerts": ["ServiceDown"], "steps": [STEP]})
    monkeypatch.setattr(HealthGateOperator, "service_spec", lambda self: DEMO_API)
    monkeypatch.setattr(HealthGateOperator, "selectors", lambda self: SELECTORS)
    read = reader(values)
    monkeypatch.setattr(PrometheusHook, "query", lambda self, promql: read(promql))
    return HealthGateOperator(runbook=spec, index=0)


def test_a_passing_round_is_the_runs_verification(monkeypatch) -> None:
    from opsdag.runbooks.engine import now

    result, detail, data = operator(monkeypatch, {"error-rate": 0.0, "availability": 1.0}).perform(
        {"params": {"dry_run": False}}, now()
    )
    assert result == "done"
    assert detail.startswith("healthy after 1 round(s): all 2 metric(s) within limits")
    assert detail.endswith("(left out: latency-p95 (no max or min: only a ratio to stable))")
    assert data["verification"]["recovered"] is True
    assert data["verification"]["detail"].startswith("health gate on demo-api stable: all 2 metric(s)")


def test_not_healthy_within_the_timeout_fails_the_step_with_the_last_reasons(monkeypatch) -> None:
    from opsdag.operators.runbook_steps import StepFailed
    from opsdag.runbooks.engine import now

    op = operator(monkeypatch, {"error-rate": 0.2, "availability": 1.0})
    with pytest.raises(
        StepFailed, match=r"not healthy within 1.0 s \([2-6] round\(s\)\): error-rate 0.2 > max 0.02"
    ):
        op.perform({"params": {"dry_run": False}}, now())


def test_a_dry_run_reads_one_round(monkeypatch) -> None:
    from opsdag.runbooks.engine import now

    result, detail, data = operator(monkeypatch, {"error-rate": 0.2, "availability": 1.0}).perform(
        {"params": {"dry_run": True}}, now()
    )
    assert (result, data["rounds"]) == ("planned", 1)
    assert detail == "dry run: would wait up to 1.0 s for the gate; now error-rate 0.2 > max 0.02"

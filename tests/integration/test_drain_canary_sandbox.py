"""``drain_canary`` on the sandbox: a canary taking traffic is drained through the real router
(HAProxy) and driver, and the load generator's answers then come from the stable version only;
then the ``health_gate`` verify judges demo-api's release metrics on the stable track through
the real Prometheus (PrometheusHook) and passes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from support.sandbox import SandboxHandle
from support.waiting import wait_for

from opsdag.runbooks.drain import drain, drain_plan
from opsdag.runbooks.health_gate import QueryFailed, gate_metrics, measure_round, round_verdict
from opsdag.spec.service import ServiceSpec

INCLUDE = Path(__file__).resolve().parents[2] / "include"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def sbx(sandbox: SandboxHandle):
    """The session sandbox without a canary and with its initial stable, before and after."""
    sandbox.reset()
    yield sandbox
    sandbox.reset()


def test_a_canary_taking_traffic_is_drained_and_only_stable_answers(sbx: SandboxHandle) -> None:
    driver, router = sbx.driver(), sbx.router()
    stable = driver.status().stable.image
    driver.start(sbx.image("1.1.0"), 1)
    wait_for(lambda: driver.readiness().ready, 20, what="canary 1.1.0 ready")
    router.set_weight(40)
    wait_for(lambda: sbx.counts()["by_version"].get("1.1.0", 0) > 10, 15, what="answers from the canary")
    plan = drain_plan(driver.status(), router.verify_weight())
    assert (plan.zero_weight, plan.remove, plan.canary_image) == (True, True, sbx.image("1.1.0"))

    done = drain(driver, router, timeout_s=30)

    assert done.split.canary == 0 and done.status.canary is None
    assert done.status.stable.image == stable and done.status.stable_healthy
    assert sbx.status()["canary"] is None

    def only_stable() -> bool:
        recent = sbx.counts()["recent"]
        return len(recent) >= 2 and all(set(b["by_version"]) == {"1.0.0"} for b in recent[-2:])

    wait_for(only_stable, 10, what="a full second answered only by the stable 1.0.0")
    # drained already: a second drain has nothing to do
    assert not drain_plan(driver.status(), router.verify_weight()).needed


def test_the_health_gate_passes_on_a_healthy_stable_through_the_real_prometheus(
    sbx: SandboxHandle, monkeypatch
) -> None:
    from opsdag.hooks.prometheus import PrometheusHook, PrometheusQueryError

    url = sbx.state()["prometheus"]["url"]
    monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS_DEFAULT", json.dumps({"conn_type": "http", "host": url}))
    hook = PrometheusHook("prometheus_default")

    def read(promql: str) -> float | None:
        try:
            return hook.query(promql)
        except PrometheusQueryError as exc:
            raise QueryFailed(str(exc)) from exc

    spec = ServiceSpec.model_validate(yaml.safe_load((INCLUDE / "services" / "demo-api.yaml").read_text()))
    judged = gate_metrics(spec.analysis.metrics, None).judged
    selectors = sbx.driver().metric_selectors()
    deadline, verdicts = time.monotonic() + 30, []
    while time.monotonic() < deadline:
        verdicts.append(round_verdict(measure_round(judged, selectors, read)))
        if verdicts[-1][0] == "pass":
            break
        time.sleep(2)
    phase, reason = verdicts[-1]
    assert phase == "pass", verdicts
    assert reason.startswith("all 2 metric(s) within limits: error-rate ")
    assert "availability 1 within min 1" in reason

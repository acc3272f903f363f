"""The Kubernetes driver and its Gateway API router against kmock's emulator, over HTTP.

``KubeReleaseCluster`` (tests/support/kube_controller.py) runs the emulator, a controller
playing the Deployment controller and the kubelet, and a real registry holding the
versions; the driver reaches the emulator through ``kubernetes_default`` exactly as in a
task. What is checked here beyond the conformance suite: the objects a release leaves
(compared whole with those before), failure reasons that name the pod and the kubelet's
state, a stalled rollout, API faults (403 before any change, 5xx retried, 409 re-read),
and the release preflight of checkout's spec with ``router: gateway-api``.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from support.kube_controller import KubeReleaseCluster
from support.kube_fixtures import kube_fixtures
from support.release_task import ReleaseTaskInstance
from support.waiting import wait_for

from opsdag.platforms.base import CANARY, PlatformError
from opsdag.platforms.kubernetes.driver import KubernetesDriver
from opsdag.platforms.registry import driver_for, router_for
from opsdag.platforms.routers.gateway_api import GatewayApiRouter

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
ROUTER = {"kind": "gateway-api", "http_route": "checkout"}

cluster, kube = kube_fixtures()


def pair(kube: KubeReleaseCluster, **router: str) -> tuple[KubernetesDriver, GatewayApiRouter]:
    spec = kube.spec({**ROUTER, **router})
    driver, traffic = driver_for(spec), router_for(spec)
    assert isinstance(driver, KubernetesDriver) and isinstance(traffic, GatewayApiRouter)
    driver.poll_interval = 0.05
    return driver, traffic


def snapshot(kube: KubeReleaseCluster) -> dict[str, Any]:
    """What the team applied, as the API holds it now (without what the controller writes)."""
    stable = kube.get("deployments", "checkout") or {}
    route = kube.get("httproutes", "checkout") or {}
    service = kube.get("services", "checkout") or {}
    return {
        "deployment": {"labels": stable["metadata"].get("labels"), "spec": stable["spec"]},
        "service": {"metadata": service["metadata"], "spec": service["spec"]},
        "route": {"metadata": route["metadata"], "spec": route["spec"]},
        "canary objects": [kube.get(kind, "checkout-canary") for kind in ("deployments", "services")],
    }


def ready(driver: KubernetesDriver) -> None:
    wait_for(lambda: driver.readiness().ready, 20, what="the canary ready")


def test_an_aborted_release_leaves_exactly_the_objects_it_found(kube: KubeReleaseCluster) -> None:
    driver, traffic = pair(kube)
    before = snapshot(kube)
    assert before["canary objects"] == [None, None]
    driver.start(kube.image("1.1.0"), 2)
    ready(driver)
    traffic.set_weight(25)
    canary_service = kube.get("services", "checkout-canary")
    assert canary_service is not None and canary_service["spec"]["selector"]["track"] == "canary"
    refs = kube.get("httproutes", "checkout")["spec"]["rules"][0]["backendRefs"]
    assert refs == [
        {"name": "checkout", "port": 80, "weight": 75},
        {"name": "checkout-canary", "port": 80, "weight": 25},
    ]
    traffic.set_weight(0)
    driver.remove(CANARY)
    assert snapshot(kube) == before


def test_promote_rolls_the_stable_deployment_to_the_canary_image_only(kube: KubeReleaseCluster) -> None:
    driver, traffic = pair(kube)
    before = snapshot(kube)
    driver.start(kube.image("1.1.0"), 2)
    ready(driver)
    traffic.set_weight(50)
    driver.promote()
    after = snapshot(kube)
    expected = copy.deepcopy(before)
    expected["deployment"]["spec"]["template"]["spec"]["containers"][0]["image"] = kube.image("1.1.0")
    assert after == expected  # the image changed, nothing else; the route is the team's again
    status = driver.status()
    assert status.stable is not None and status.stable.image == kube.image("1.1.0") and status.stable_healthy
    driver.promote()  # a retried task: nothing left to do
    assert snapshot(kube) == expected


def test_a_crash_loop_and_a_pull_failure_are_named_with_the_pod(kube: KubeReleaseCluster) -> None:
    driver, traffic = pair(kube)
    driver.start(kube.image("1.4.0-crash"), 2)
    crashed = wait_for(lambda: (r := driver.readiness()).failed and r, 20, what="the crash loop reported")
    assert "CrashLoopBackOff" in crashed.reason and "pod checkout-canary-" in crashed.reason, crashed
    assert kube.image("1.4.0-crash") in crashed.reason
    with pytest.raises(PlatformError, match="CrashLoopBackOff"):
        traffic.set_weight(5)
    # A tag the registry has, which the kubelet cannot pull (e.g. no pull secret for it).
    kube.controller.unpullable.add(kube.image("1.2.0"))
    driver.start(kube.image("1.2.0"), 2)  # replaces the crashing canary
    pulled = wait_for(
        lambda: (r := driver.readiness()).failed and "ImagePullBackOff" in r.reason and r,
        20,
        what="the pull failure reported",
    )
    assert kube.image("1.2.0") in pulled.reason, pulled
    driver.remove(CANARY)


def test_an_image_the_registry_does_not_have_fails_the_canary_at_once(kube: KubeReleaseCluster) -> None:
    driver, _ = pair(kube)
    driver.start(kube.image("9.9.9"), 2)
    readiness = driver.readiness()  # no kubelet had to try
    assert readiness.failed and "has no tag 9.9.9 of shop/checkout" in readiness.reason, readiness
    driver.start(kube.image("1.1.0"), 2)  # the next start clears it
    ready(driver)
    driver.remove(CANARY)


def test_a_stalled_rollout_fails_at_its_progress_deadline(kube: KubeReleaseCluster) -> None:
    driver, traffic = pair(kube)
    kube.controller.progress_deadline = 1.0  # seconds, for progressDeadlineSeconds: 600
    driver.start(kube.image("1.5.0-stall"), 2)
    assert not driver.readiness().failed  # running, not ready: not failed yet
    stalled = wait_for(lambda: (r := driver.readiness()).failed and r, 20, what="the deadline reported")
    assert "ProgressDeadlineExceeded after 600 s" in stalled.reason, stalled
    assert traffic.verify_weight().canary == 0
    driver.remove(CANARY)
    assert driver.status().canary is None and driver.status().stable_healthy


def test_forbidden_stops_the_release_before_any_change(kube: KubeReleaseCluster) -> None:
    driver, traffic = pair(kube)
    before = snapshot(kube)
    kube.kube.fail("get", "checkout", 403, times=10)
    with pytest.raises(PlatformError) as refused:
        driver.start(kube.image("1.1.0"), 2)
    message = str(refused.value)
    assert message.startswith("get deployments/checkout in namespace shop: 403 Forbidden"), message
    assert "needs the RBAC verb 'get' on deployments" in message
    with pytest.raises(PlatformError, match=r"^get httproutes/checkout in namespace shop: 403"):
        traffic.verify_weight()
    with kube.kube._faults_lock:
        kube.kube.faults.clear()
    assert snapshot(kube) == before


def test_server_errors_are_retried_and_conflicts_read_again(kube: KubeReleaseCluster) -> None:
    driver, traffic = pair(kube)
    driver.start(kube.image("1.1.0"), 2)
    ready(driver)
    unavailable = kube.kube.fail("patch", "checkout", 503, times=2)
    traffic.set_weight(10)
    assert unavailable.served == 2 and traffic.verify_weight().canary == 10
    conflict = kube.kube.fail("patch", "checkout", 409, times=1)
    traffic.set_weight(20)
    assert conflict.served == 1 and traffic.verify_weight().canary == 20
    throttled = kube.kube.fail("list", "pods", 429, times=2)
    assert driver.readiness().ready and throttled.served == 2
    stuck = kube.kube.fail("patch", "checkout", 409, times=10)
    with pytest.raises(PlatformError, match=r"still 409 Conflict after 5 reads"):
        traffic.set_weight(30)
    assert stuck.served == 5, stuck
    with kube.kube._faults_lock:
        kube.kube.faults.clear()
    traffic.set_weight(0)
    driver.remove(CANARY)


def test_missing_objects_and_a_shared_selector_are_refused_with_names(kube: KubeReleaseCluster) -> None:
    _, traffic = pair(kube, http_route="shop-entry")
    with pytest.raises(PlatformError, match=r"get httproutes/shop-entry in namespace shop: not found"):
        traffic.verify_weight()
    spec = kube.spec(ROUTER).model_dump(mode="json")
    spec["platform"]["deployment"] = "checkout-v2"
    with pytest.raises(PlatformError, match=r"get deployments/checkout-v2 in namespace shop: not found"):
        driver_for(spec).status()
    kube.call("PATCH", "services", "checkout", {"spec": {"selector": {"app": "checkout", "track": None}}})
    try:
        with pytest.raises(
            PlatformError, match=r"Service shop/checkout selects app=checkout, which the canary"
        ):
            pair(kube)[1].verify_weight()
    finally:
        kube.call("PATCH", "services", "checkout", {"spec": {"selector": {"track": "stable"}}})


def test_the_release_preflight_of_checkout_with_a_gateway_api_route(
    kube: KubeReleaseCluster, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prom_fixtures import start_prometheus

    from opsdag.operators.preflight import ReleasePreflightOperator

    prometheus = start_prometheus(tmp_path / "prometheus", [])
    try:
        monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS_DEFAULT", prometheus.connection_env())
        spec = kube.spec(ROUTER)
        request = {"image": kube.image("1.1.0"), "strategy": "canary", "dry_run": False}
        ti = ReleaseTaskInstance(request)
        result = ReleasePreflightOperator(task_id="preflight", service=spec).run({"ti": ti, "params": {}})
    finally:
        prometheus.stop()
    checks = {c["name"]: (c["ok"], c["detail"]) for c in result["checks"]}
    assert all(ok for ok, _ in checks.values()), checks
    assert checks["platform and router reachable"] == (True, "0 % to canary")
    assert result["rollback_target"] == {"image": kube.image("1.0.0"), "instances": 2, "canary_weight": 0}
    assert ti.pushed["preflight"] == result


def test_the_rollout_wait_is_a_trigger_that_takes_traffic_away_on_a_crash(kube: KubeReleaseCluster) -> None:
    """``RolloutStatusTrigger`` (deferrable) on the Kubernetes driver, rebuilt from its serialized form."""
    import asyncio
    import importlib
    import time

    from opsdag.triggers.rollout import RolloutStatusTrigger

    spec = kube.spec(ROUTER)
    service = spec.model_dump(mode="json")
    driver, traffic = pair(kube)

    def first_event(image: str, abort: str | None) -> dict[str, Any]:
        abort_kwarg = {"service": service, "action": abort} if abort else None
        trigger = RolloutStatusTrigger(
            service=service, image=image, timeout_at=time.time() + 30, poll_interval=0.1, abort=abort_kwarg
        )
        path, kwargs = trigger.serialize()
        module, _, name = path.rpartition(".")
        rebuilt = getattr(importlib.import_module(module), name)(**kwargs)  # as the triggerer does

        async def run() -> dict[str, Any]:
            async for event in rebuilt.run():
                return event.payload
            raise AssertionError("no event")

        return asyncio.run(run())

    driver.start(kube.image("1.1.0"), 2)
    ready_event = first_event(kube.image("1.1.0"), None)
    assert ready_event["status"] == "ready" and ready_event["abort"] is None, ready_event
    traffic.set_weight(20)
    driver.start(kube.image("1.4.0-crash"), 2)  # replaced: its traffic went to stable first
    assert traffic.verify_weight().canary == 0
    failed = first_event(kube.image("1.4.0-crash"), "weight_zero")
    assert failed["status"] == "failed" and "CrashLoopBackOff" in failed["reason"], failed
    assert failed["abort"] is not None and traffic.verify_weight().canary == 0
    driver.remove(CANARY)


def test_a_promote_whose_stable_rollout_fails_puts_the_stable_image_back(kube: KubeReleaseCluster) -> None:
    from opsdag.strategies.undo import undo_canary

    driver, traffic = pair(kube)
    before = snapshot(kube)
    target = driver.rollback_target()
    driver.start(kube.image("1.1.0"), 2)
    ready(driver)
    traffic.set_weight(50)
    kube.controller.crashing_deployments.add("checkout")  # its new pods will crash-loop
    try:
        with pytest.raises(PlatformError) as failed:
            driver.promote()
    finally:
        kube.controller.crashing_deployments.clear()
    message = str(failed.value)
    assert "did not roll to" in message and "CrashLoopBackOff" in message, message
    assert f"its image is back to {kube.image('1.0.0')} (the canary still serves)" in message
    assert traffic.verify_weight().canary == 100  # the healthy canary serves meanwhile
    undo_canary(driver, traffic, target)  # what the rollback task does
    wait_for(lambda: driver.status().stable_healthy, 20, what="the stable Deployment healthy again")
    assert snapshot(kube) == before
    assert driver.rollback_target() == target


def test_a_missing_rbac_verb_stops_the_release_at_preflight(kube: KubeReleaseCluster) -> None:
    driver, _ = pair(kube)
    assert driver.access_problems() == []
    kube.kube.forbidden.update({("patch", "httproutes"), ("create", "deployments")})
    try:
        with pytest.raises(PlatformError) as refused:
            driver.rollback_target()  # what preflight records before any change
    finally:
        kube.kube.forbidden.clear()
    assert str(refused.value) == (
        "the account of connection 'kubernetes_default' may not, in namespace shop: "
        "create deployments.apps (no RBAC rule allows it (test)); "
        "patch httproutes.gateway.networking.k8s.io (no RBAC rule allows it (test)) "
        "(the Role opsdag needs: opsdag.platforms.kubernetes.rbac)"
    )
    assert driver.rollback_target().image == kube.image("1.0.0")

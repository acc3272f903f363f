"""Blue-green on Kubernetes (``router: service-selector``) against kmock's emulator, over HTTP.

``checkout-blue`` serves behind ``checkout-active``; a release starts ``checkout-green``,
previews it through ``checkout-preview``, switches the active Service's selector in one
call and, after the scale-down delay, deletes the old colour. What a user would notice is
checked on the objects themselves, compared whole with those before: which colour each
Service selects, which Deployments exist, that an undo leaves exactly what it found, and
the refusals (a colour not all ready, a stalled rollout, a forbidden or failing API call).
The conformance suite runs the same pair as ``kubernetes+service-selector``.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import kmock
import pytest
from support.kube_bluegreen_objects import ACTIVE, PREVIEW, ROUTER, BlueGreenObjects
from support.kube_controller import KubeReleaseCluster
from support.kube_fixtures import kube_fixtures
from support.release_task import ReleaseTaskInstance
from support.waiting import wait_for

from opsdag.analysis.rollout_state import promoted_state_problems, restored_state_problems
from opsdag.platforms.base import CANARY, STABLE, PlatformError
from opsdag.platforms.kubernetes.bluegreen import BlueGreenDriver
from opsdag.platforms.kubernetes.colours import REPLACES
from opsdag.platforms.registry import driver_for, router_for
from opsdag.platforms.routers.service_selector import ServiceSelectorRouter
from opsdag.strategies.undo import undo_bluegreen

REVISION = "deployment.kubernetes.io/revision"
pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

cluster, kube = kube_fixtures(reset=lambda started: BlueGreenObjects(started).reset())


def pair(kube: KubeReleaseCluster) -> tuple[BlueGreenDriver, ServiceSelectorRouter]:
    spec = kube.spec(ROUTER)
    driver, router = driver_for(spec), router_for(spec)
    assert isinstance(driver, BlueGreenDriver) and isinstance(router, ServiceSelectorRouter)
    driver.poll_interval = 0.05
    return driver, router


def snapshot(kube: KubeReleaseCluster, server_fields: bool = True) -> dict[str, Any]:
    """Both colours' Deployments and both Services as the API holds them (without status).

    ``server_fields``: with the ``uid``, ``creationTimestamp`` and revision annotation the API
    server and the Deployment controller (here the test's, a moment after a create) give it.
    """
    found: dict[str, Any] = {}
    for colour in ("blue", "green"):
        deployment = kube.get("deployments", f"checkout-{colour}")
        if deployment is not None and not server_fields:
            for key in ("uid", "creationTimestamp"):
                deployment["metadata"].pop(key, None)
            (deployment["metadata"].get("annotations") or {}).pop(REVISION, None)
        found[colour] = deployment and {"metadata": deployment["metadata"], "spec": deployment["spec"]}
    for name in (ACTIVE, PREVIEW):
        service = kube.get("services", name) or {}
        found[name] = {"metadata": service["metadata"], "spec": service["spec"]}
    return found


def selected(kube: KubeReleaseCluster) -> tuple[str, str]:
    """The colours the active and the preview Service select."""
    return tuple(
        kube.get("services", name)["spec"]["selector"]["opsdag.io/colour"] for name in (ACTIVE, PREVIEW)
    )


def ready(driver: BlueGreenDriver) -> None:
    wait_for(lambda: driver.readiness().ready, 20, what="the new colour ready")


def changes(kube: KubeReleaseCluster) -> list[tuple[str, str]]:
    """The changes the API received so far, in order: (verb, object name)."""
    verbs = {kmock.action.CREATE: "create", kmock.action.UPDATE: "patch", kmock.action.DELETE: "delete"}
    out = []
    for request in list(kube.kube.emulator):
        resource = request.resource.plural if request.resource is not None else None
        if (
            request.action in verbs
            and request.subresource is None
            and resource in ("deployments", "services")
        ):
            name = request.name or (request.data or {}).get("metadata", {}).get("name")
            out.append((verbs[request.action], name))
    return out


def test_a_healthy_release_switches_once_and_the_old_colour_goes_after_the_delay(
    kube: KubeReleaseCluster,
) -> None:
    from airflow.sdk.exceptions import TaskDeferred

    from opsdag.operators.traffic import OpenPreviewOperator, SwitchOperator
    from opsdag.operators.workload import PromoteOperator, ScaleDownDelayOperator

    spec = kube.spec(ROUTER)
    driver, router = pair(kube)
    new = kube.image("1.1.0")
    context = {"ti": ReleaseTaskInstance({"image": new, "strategy": "bluegreen"}), "params": {}}
    driver.start(new, 2)
    ready(driver)
    green = kube.get("deployments", "checkout-green")
    assert green["spec"]["template"]["metadata"]["labels"]["opsdag.io/colour"] == "green"
    assert green["metadata"]["annotations"][REPLACES] == "blue"  # the release's new colour, on the cluster
    assert selected(kube) == ("blue", "blue")
    (pod_hash,) = {p["metadata"]["labels"]["pod-template-hash"] for p in driver.pods(green, CANARY)}
    assert driver.metric_selectors() == {
        "canary": f'namespace="shop", pod=~"checkout-green-{pod_hash}-[a-z0-9]+"',
        "stable": 'namespace="shop", pod=~"checkout-blue-[a-z0-9]+-[a-z0-9]+"',
    }

    open_preview = OpenPreviewOperator(task_id="open", service=spec, strategy="bluegreen", share=0.05)
    for _ in range(2):  # a retried task changes nothing more
        assert open_preview.run(context)["preview"]
    assert selected(kube) == ("blue", "green")  # users still on blue; the preview reaches green
    before_switch = len(changes(kube))
    switch = SwitchOperator(task_id="switch", service=spec, strategy="bluegreen")
    for _ in range(2):
        assert switch.run(context)["canary"] == 100
    assert selected(kube) == ("green", "green")
    assert changes(kube)[before_switch:] == [("patch", ACTIVE)]  # one API call moved every user

    delay = ScaleDownDelayOperator(
        task_id="scale_down_delay", service=spec, strategy="bluegreen", delay=timedelta(seconds=1.5)
    )
    switched_at = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        delay.run(context)

    async def wait_out() -> float:
        async for _ in deferred.value.trigger.run():
            return time.time()
        raise AssertionError("the delay's trigger ended without an event")

    fired_at = asyncio.run(wait_out())
    assert fired_at - switched_at >= 1.4
    old = driver.status()
    assert old.stable.image == kube.image("1.0.0") and old.stable_healthy  # blue was up all along
    pods_before = {p["metadata"]["name"] for p in driver.pods(green, CANARY)}
    delay.execute_complete(context)

    promote = PromoteOperator(task_id="promote", service=spec)
    promote.run(context)
    assert kube.get("deployments", "checkout-blue") is None  # the old colour is gone
    once = snapshot(kube)
    promote.run(context)
    assert snapshot(kube) == once
    promoted = kube.get("deployments", "checkout-green")
    assert promoted["spec"] == green["spec"]  # served as it ran: no second rollout
    assert REPLACES not in (promoted["metadata"].get("annotations") or {})
    assert {p["metadata"]["name"] for p in driver.pods(promoted, STABLE)} == pods_before
    assert selected(kube) == ("green", "green")
    assert promoted_state_problems(driver.status(), router.verify_weight(), new) == []
    assert driver.rollback_target().image == new  # the next release replaces green


def test_an_undone_release_leaves_exactly_the_objects_it_found(kube: KubeReleaseCluster) -> None:
    from opsdag.operators.rollback import RollbackOperator

    driver, router = pair(kube)
    before = snapshot(kube)
    assert before["green"] is None
    target = driver.rollback_target()
    ti = ReleaseTaskInstance({"image": kube.image("1.1.0"), "strategy": "bluegreen"})
    ti.pushed["preflight"] = {"checks": [{"name": "all", "ok": True}], "rollback_target": target.to_dict()}
    rollback = RollbackOperator(task_id="rollback", service=kube.spec(ROUTER))
    driver.start(kube.image("1.1.0"), 2)
    ready(driver)
    router.set_preview(True)
    router.switch(CANARY)
    assert selected(kube) == ("green", "green")
    start = len(changes(kube))
    result = rollback.run({"ti": ti, "params": {}})  # undo_bluegreen, then checked against the target
    assert result["problems"] == [] and result["split"]["canary"] == 0
    # Traffic first: neither Service selects green when it is deleted.
    assert changes(kube)[start:] == [("patch", ACTIVE), ("patch", PREVIEW), ("delete", "checkout-green")]
    assert snapshot(kube) == before
    assert restored_state_problems(driver.status(), router.verify_weight(), target) == []
    rollback.run({"ti": ti, "params": {}})  # a retried rollback: nothing more
    undo_bluegreen(driver, router, target)
    assert snapshot(kube) == before and changes(kube)[start:][3:] == []


def test_a_stalled_rollout_is_never_switched_to_and_is_undone_after_its_deadline(
    kube: KubeReleaseCluster,
) -> None:
    driver, router = pair(kube)
    before = snapshot(kube)
    target = driver.rollback_target()
    driver.start(kube.image("1.5.0-stall"), 2)
    running = "checkout-green: 0 of 2 replicas available"  # both pods updated, running, none ready
    wait_for(lambda: running in driver.colour_readiness(driver.colours()).reason, 20, what=running)
    for move in (lambda: router.switch(CANARY), lambda: router.set_preview(True), driver.promote):
        with pytest.raises(
            PlatformError,
            match=r"not (all its pods are )?ready: Deployment shop/checkout-green: 0 of 2 replicas available",
        ):
            move()
    assert selected(kube) == ("blue", "blue")
    assert not driver.readiness().failed  # running, not ready: not failed before its deadline
    kube.controller.progress_deadline = 1.0  # seconds, for progressDeadlineSeconds: 600
    stalled = wait_for(lambda: (r := driver.readiness()).failed and r, 20, what="the deadline reported")
    assert "ProgressDeadlineExceeded after 600 s" in stalled.reason, stalled
    undo_bluegreen(driver, router, target)
    assert snapshot(kube) == before


def test_a_colour_with_one_pod_not_ready_gets_no_traffic(kube: KubeReleaseCluster) -> None:
    driver, router = pair(kube)
    driver.start(kube.image("1.1.0"), 2)
    ready(driver)
    router.set_preview(True)
    kube.controller.crashing_deployments.add("checkout-green")  # its next pod crash-loops
    kube.call("PATCH", "deployments", "checkout-green", {"spec": {"replicas": 3}})
    wait_for(
        lambda: "CrashLoopBackOff" in driver.colour_readiness(driver.colours()).reason, 20, what="the crash"
    )
    with pytest.raises(PlatformError) as refused:
        router.switch(CANARY)
    assert "checkout-green cannot take all the traffic: not all its pods are ready" in str(refused.value)
    assert "CrashLoopBackOff" in str(refused.value)
    with pytest.raises(PlatformError, match="0 or 100 %, not 50"):
        router.set_weight(50)  # a selector cannot split
    assert selected(kube) == ("blue", "green")
    assert driver.readiness().failed  # found failed: the preview goes back to blue too
    assert selected(kube) == ("blue", "blue")
    driver.remove(CANARY)


def test_every_call_made_twice_leaves_what_one_call_left(kube: KubeReleaseCluster) -> None:
    driver, router = pair(kube)
    new = kube.image("1.1.0")
    calls = [
        lambda: driver.start(new, 2),
        lambda: ready(driver),
        lambda: router.set_preview(True),
        lambda: router.switch(CANARY),
        lambda: router.switch(STABLE),
        lambda: router.set_weight(100),
        driver.promote,
    ]
    for call in calls:
        call()
        once = snapshot(kube, server_fields=False)
        call()
        assert snapshot(kube, server_fields=False) == once
    assert selected(kube) == ("green", "green") and kube.get("deployments", "checkout-blue") is None


def test_forbidden_and_missing_objects_stop_before_any_change(kube: KubeReleaseCluster) -> None:
    driver, _ = pair(kube)
    before = snapshot(kube)
    kube.kube.fail("get", ACTIVE, 403, times=10)
    with pytest.raises(PlatformError) as refused:
        driver.start(kube.image("1.1.0"), 2)
    message = str(refused.value)
    assert message.startswith("get services/checkout-active in namespace shop: 403 Forbidden"), message
    assert "needs the RBAC verb 'get' on services" in message
    with kube.kube._faults_lock:
        kube.kube.faults.clear()
    assert snapshot(kube) == before

    kube.kube.forbidden.add(("patch", "services"))
    with pytest.raises(PlatformError, match=r"may not, in namespace shop: patch services \(no RBAC rule"):
        driver.rollback_target()  # what preflight records: refused before any change
    kube.kube.forbidden.clear()

    spec = kube.spec({**ROUTER, "preview_service": "checkout-staging"})
    with pytest.raises(PlatformError, match=r"get services/checkout-staging in namespace shop: not found"):
        router_for(spec).verify_weight()
    spec = kube.spec(ROUTER).model_dump(mode="json")
    spec["platform"]["deployment"] = "payments"
    with pytest.raises(PlatformError, match=r"get deployments/payments-blue in namespace shop: not found"):
        driver_for(spec).status()
    assert snapshot(kube) == before


def test_server_errors_are_retried_and_conflicts_read_again(kube: KubeReleaseCluster) -> None:
    driver, router = pair(kube)
    lost = kube.kube.fail("create", "checkout-green", 500, times=1)  # stored, but the answer was lost
    driver.start(kube.image("1.1.0"), 2)
    assert lost.served == 1 and kube.get("deployments", "checkout-green") is not None
    ready(driver)
    unavailable = kube.kube.fail("patch", ACTIVE, 503, times=2)
    router.switch(CANARY)
    assert unavailable.served == 2 and selected(kube)[0] == "green"
    conflict = kube.kube.fail("patch", ACTIVE, 409, times=1)
    router.switch(STABLE)
    assert conflict.served == 1 and selected(kube)[0] == "blue"
    refused = kube.kube.fail("patch", ACTIVE, 403, times=1)
    with pytest.raises(PlatformError, match=r"^patch services/checkout-active in namespace shop: 403"):
        router.switch(CANARY)
    assert refused.served == 1 and selected(kube) == ("blue", "blue")  # nothing changed
    lost = kube.kube.fail("delete", "checkout-green", 503, times=1)  # deleted, but the answer was lost
    driver.remove(CANARY)  # the retry finds it gone
    assert lost.served == 1 and kube.get("deployments", "checkout-green") is None


def test_the_release_preflight_records_the_stable_colour(
    kube: KubeReleaseCluster, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prom_fixtures import start_prometheus

    from opsdag.operators.preflight import ReleasePreflightOperator
    from opsdag.spec.service import ServiceSpec
    from opsdag.strategies.choice import choose_strategy_for

    data = kube.spec(ROUTER).model_dump(mode="json")
    data["bluegreen"] = {"pre_promotion_bake": "1m", "post_promotion_bake": "1m", "scale_down_delay": "5m"}
    spec = ServiceSpec.model_validate(data)
    assert choose_strategy_for("bluegreen", spec) == "bluegreen"
    prometheus = start_prometheus(tmp_path / "prometheus", [])
    try:
        monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS_DEFAULT", prometheus.connection_env())
        ti = ReleaseTaskInstance({"image": kube.image("1.1.0"), "strategy": "bluegreen", "dry_run": False})
        result = ReleasePreflightOperator(task_id="preflight", service=spec).run({"ti": ti, "params": {}})
    finally:
        prometheus.stop()
    checks = {c["name"]: (c["ok"], c["detail"]) for c in result["checks"]}
    assert all(ok for ok, _ in checks.values()), checks
    assert result["rollback_target"] == {"image": kube.image("1.0.0"), "instances": 2, "canary_weight": 0}
    assert result["stable_image"] == kube.image("1.0.0")


def test_every_call_of_a_release_is_in_the_role_for_this_router(
    kube: KubeReleaseCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opsdag.platforms.kubernetes import rbac
    from opsdag.platforms.kubernetes.api import KubeApi

    calls: set[tuple[str, str]] = set()
    original = KubeApi.request

    def recorded(self: KubeApi, verb: str, method: str, resource: str, *args: Any, **kwargs: Any) -> Any:
        calls.add((verb, resource))
        return original(self, verb, method, resource, *args, **kwargs)

    monkeypatch.setattr(KubeApi, "request", recorded)
    driver, router = pair(kube)
    driver.status(), driver.rollback_target(), driver.endpoints(STABLE)
    driver.start(kube.image("1.1.0"), 2)
    ready(driver)
    driver.metric_selectors(), router.set_preview(True), router.switch(CANARY), driver.promote()
    driver.start(kube.image("1.2.0"), 2)
    driver.remove(CANARY)
    rules = rbac.rules_for("service-selector")
    granted = {(verb, resource) for (_, resource), verbs in rules.items() for verb in verbs}
    assert calls and calls <= granted, sorted(calls - granted)

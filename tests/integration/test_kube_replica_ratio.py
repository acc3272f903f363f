"""The replica-ratio router against kmock's emulator: replica counts and splits read back from the cluster.

``KubeReleaseCluster`` plays the Deployment controller and the kubelet; the router reaches
it through ``kubernetes_default`` as in a task. checkout's traffic goes through
``checkout-shared``, one Service selecting both tracks' pods (``support.kube_ratio_support``).
Checked here beyond the conformance suite (``kubernetes+replica-ratio``): the issue's two
examples, the objects an aborted or promoted release leaves, retried calls, API faults
(409 re-read, 500 retried, 403 named and nothing changed) and refusals naming the field.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from support.kube_controller import KubeReleaseCluster
from support.kube_fixtures import kube_fixtures
from support.kube_ratio_support import SHARED_SERVICE, ratio_router, shared_service
from support.release_task import ReleaseTaskInstance
from support.waiting import wait_for

from opsdag.platforms.base import CANARY, PlatformError, TrafficSplit
from opsdag.platforms.kubernetes.driver import KubernetesDriver
from opsdag.platforms.registry import driver_for, router_for
from opsdag.platforms.routers.replica_ratio import REQUESTED, ReplicaRatioRouter
from opsdag.platforms.weights import ratio_sentence

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
REVISION = "deployment.kubernetes.io/revision"  # the Deployment controller's, bumped by a rollout

cluster, kube = kube_fixtures(prepare=shared_service)


def pair(kube: KubeReleaseCluster, **router: Any) -> tuple[KubernetesDriver, ReplicaRatioRouter]:
    spec = kube.spec(ratio_router(**router))
    driver, traffic = driver_for(spec), router_for(spec)
    assert isinstance(driver, KubernetesDriver) and isinstance(traffic, ReplicaRatioRouter)
    driver.poll_interval = traffic.poll_interval = 0.05
    return driver, traffic


def started(
    kube: KubeReleaseCluster, stable: int, canary: int = 1
) -> tuple[KubernetesDriver, ReplicaRatioRouter]:
    """checkout at ``stable`` replicas with a ready canary of 1.1.0 beside it."""
    kube.reset(replicas=stable)
    driver, traffic = pair(kube)
    driver.start(kube.image("1.1.0"), canary)
    wait_for(lambda: driver.readiness().ready, 20, what="the canary ready")
    return driver, traffic


def replicas(kube: KubeReleaseCluster) -> tuple[int, int]:
    """``(stable, canary)`` replicas as the API holds them (canary: None when there is none)."""
    stable = kube.get("deployments", "checkout") or {}
    canary = kube.get("deployments", "checkout-canary")
    return stable["spec"]["replicas"], canary["spec"]["replicas"] if canary else None


def said(driver: KubernetesDriver, traffic: ReplicaRatioRouter) -> str:
    status = driver.status()
    canary = status.canary.ready_instances if status.canary else 0
    return ratio_sentence(traffic.verify_weight().requested, canary, status.stable.ready_instances)


def snapshot(kube: KubeReleaseCluster) -> dict[str, Any]:
    """What the team applied, as the API holds it now (without what the controller writes)."""
    stable = kube.get("deployments", "checkout") or {}
    service = kube.get("services", SHARED_SERVICE) or {}
    return {
        "deployment": {"metadata": _meta(stable), "spec": stable["spec"]},
        "service": {"metadata": service["metadata"], "spec": service["spec"]},
        "canary objects": [kube.get(kind, "checkout-canary") for kind in ("deployments", "services")],
    }


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    """Metadata as the team wrote it: without what the API server and the controller keep there."""
    meta = {
        k: v
        for k, v in obj["metadata"].items()
        if k not in ("resourceVersion", "generation", "managedFields")
    }
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != REVISION}
    return {**meta, "annotations": annotations}


def test_asked_25_percent_beside_6_the_canary_gets_2_of_8(kube: KubeReleaseCluster) -> None:
    driver, traffic = started(kube, stable=6)
    traffic.set_weight(25)
    assert replicas(kube) == (6, 2)
    assert traffic.verify_weight() == TrafficSplit(stable=75.0, canary=25.0, exact=True, requested=25)
    assert said(driver, traffic) == "asked 25 %, got 2 of 8 replicas = 25 %"
    annotations = kube.get("deployments", "checkout-canary")["metadata"]["annotations"]
    assert annotations[REQUESTED] == "25"


def test_asked_10_percent_beside_4_the_canary_gets_1_of_5_and_says_20(kube: KubeReleaseCluster) -> None:
    driver, traffic = started(kube, stable=4, canary=3)
    traffic.set_weight(10)
    assert replicas(kube) == (4, 1)
    assert traffic.verify_weight() == TrafficSplit(stable=80.0, canary=20.0, exact=False, requested=10)
    assert said(driver, traffic) == "asked 10 %, got 1 of 5 replicas = 20 %"


def test_100_percent_gives_the_most_canary_replicas_and_says_what_they_get(kube: KubeReleaseCluster) -> None:
    driver, traffic = started(kube, stable=2)
    traffic.max_canary_replicas = 6
    traffic.switch(CANARY)
    assert replicas(kube) == (2, 6)  # the stable never goes below what it had: 6 of 8
    assert traffic.verify_weight() == TrafficSplit(stable=25.0, canary=75.0, exact=False, requested=100)
    assert said(driver, traffic) == "asked 100 %, got 6 of 8 replicas = 75 %"


def test_an_aborted_release_leaves_exactly_the_objects_it_found(kube: KubeReleaseCluster) -> None:
    kube.reset(replicas=4)
    before = snapshot(kube)
    assert before["canary objects"] == [None, None]
    driver, traffic = pair(kube)
    driver.start(kube.image("1.1.0"), 1)
    wait_for(lambda: driver.readiness().ready, 20, what="the canary ready")
    traffic.set_weight(50)
    assert replicas(kube) == (4, 4)
    traffic.set_weight(0)  # the abort: the canary takes nothing at once, and stays for the driver
    assert replicas(kube) == (4, 0)
    assert traffic.verify_weight() == TrafficSplit(stable=100.0, canary=0.0, exact=True, requested=0)
    assert driver.endpoints(CANARY) == []
    driver.remove(CANARY)
    assert snapshot(kube) == before
    assert traffic.verify_weight() == TrafficSplit(stable=100.0, canary=0.0, exact=True, requested=0)


def test_promote_leaves_the_team_s_objects_with_the_new_image_only(kube: KubeReleaseCluster) -> None:
    kube.reset(replicas=3)
    before = snapshot(kube)
    driver, traffic = pair(kube)
    driver.start(kube.image("1.1.0"), 1)
    wait_for(lambda: driver.readiness().ready, 20, what="the canary ready")
    traffic.set_weight(25)
    driver.promote()
    expected = copy.deepcopy(before)
    expected["deployment"]["spec"]["template"]["spec"]["containers"][0]["image"] = kube.image("1.1.0")
    assert snapshot(kube) == expected
    assert traffic.verify_weight() == TrafficSplit(stable=100.0, canary=0.0, exact=True, requested=0)


def test_every_call_twice_leaves_the_same_state(kube: KubeReleaseCluster) -> None:
    driver, traffic = started(kube, stable=4)

    def state() -> tuple[Any, ...]:
        canary = kube.get("deployments", "checkout-canary")
        meta = canary["metadata"] if canary else {}
        return replicas(kube), (meta.get("annotations") or {}).get(REQUESTED), traffic.verify_weight()

    for percent in (25, 50, 100, 10, 0):
        traffic.set_weight(percent)
        first = state()
        traffic.set_weight(percent)  # a retried task
        assert state() == first, percent
    twice = [traffic.set_weight(0) for _ in range(2)]
    assert twice == [None, None] and replicas(kube) == (4, 0)
    driver.remove(CANARY)
    traffic.set_weight(0)  # no canary at all: nothing to do
    assert replicas(kube) == (4, None)


@pytest.mark.parametrize("status", [409, 500])
def test_a_conflict_is_re_read_and_a_server_error_retried(kube: KubeReleaseCluster, status: int) -> None:
    _, traffic = started(kube, stable=4)
    fault = kube.kube.fail("patch", "checkout-canary", status, times=2)
    traffic.set_weight(50)
    assert fault.served == 2
    assert replicas(kube) == (4, 4)
    assert traffic.verify_weight() == TrafficSplit(stable=50.0, canary=50.0, exact=True, requested=50)


def test_a_forbidden_patch_is_named_and_changes_nothing(kube: KubeReleaseCluster) -> None:
    _, traffic = started(kube, stable=4)
    traffic.set_weight(25)
    before = (replicas(kube), traffic.verify_weight())
    kube.kube.fail("patch", "checkout-canary", 403, times=1)
    with pytest.raises(PlatformError) as refused:
        traffic.set_weight(50)
    assert str(refused.value).startswith("patch deployments/checkout-canary in namespace shop: 403 Forbidden")
    assert "needs the RBAC verb 'patch' on deployments" in str(refused.value)
    assert (replicas(kube), traffic.verify_weight()) == before


def test_a_service_that_does_not_select_both_tracks_is_refused_naming_the_field(
    kube: KubeReleaseCluster,
) -> None:
    started(kube, stable=2)
    stable_only = router_for(kube.spec(ratio_router(service="checkout")))  # selects track: stable
    with pytest.raises(PlatformError) as refused:
        stable_only.set_weight(10)
    assert str(refused.value) == (
        "Service shop/checkout (platform.router.service) selects app=checkout,track=stable, which the "
        "canary pods do not carry: a replica ratio needs one Service selecting both tracks' pods "
        "(no track or version in its selector)"
    )
    missing = router_for(kube.spec(ratio_router(service="checkout-everything")))
    with pytest.raises(PlatformError, match=r"platform\.router\.service must name the service's Service"):
        missing.set_weight(10)
    missing.set_weight(0)  # the abort never needs the Service
    assert replicas(kube) == (2, 0)


def test_no_traffic_to_a_canary_that_does_not_run_or_failed(kube: KubeReleaseCluster) -> None:
    driver, traffic = pair(kube)
    with pytest.raises(
        PlatformError, match=r"^no canary Deployment checkout-canary runs: it cannot take 10 %$"
    ):
        traffic.set_weight(10)
    driver.start(kube.image("1.4.0-crash"), 1)
    wait_for(lambda: driver.readiness().failed, 20, what="the crash reported")
    assert replicas(kube) == (2, 0)  # taken out of rotation: its crashing pods went with it
    for _ in range(2):  # and it stays out, though no pod is left to show the crash
        with pytest.raises(
            PlatformError,
            match=r"^the canary failed, it gets no traffic: pod checkout-canary-.*CrashLoopBackOff",
        ):
            traffic.set_weight(10)
    assert replicas(kube) == (2, 0) and traffic.verify_weight().canary == 0
    driver.start(kube.image("1.1.0"), 1)  # a new image is judged on its own
    wait_for(lambda: driver.readiness().ready, 20, what="the new canary ready")
    traffic.set_weight(10)
    assert replicas(kube) == (2, 1)


def test_the_release_deploy_step_starts_one_canary_pod_and_names_it_once_ready(
    kube: KubeReleaseCluster,
) -> None:
    """Behind a replica ratio every ready canary pod takes a share: the deploy step starts 1,
    whatever the stable runs, and the gates' ``$canary`` names that pod (read once it is ready)."""
    import asyncio
    import re

    from airflow.sdk.exceptions import TaskDeferred

    from opsdag.operators.workload import StartVersionOperator

    kube.reset(replicas=4)
    driver, _ = pair(kube)
    new = kube.image("1.1.0")
    ti = ReleaseTaskInstance({"image": new, "strategy": "canary"})
    pushed = ti.pushed
    context = ti.context()
    deploy = StartVersionOperator(
        task_id="deploy", service=driver.spec, strategy="canary", image=new, instances=None
    )
    for _ in range(2):  # a retried task starts nothing more
        with pytest.raises(TaskDeferred) as deferred:
            deploy.run(context)
    assert replicas(kube) == (4, 1)
    assert "selectors" not in pushed  # not before its pod exists
    event = asyncio.run(anext(deferred.value.trigger.run())).payload
    assert event["status"] == "ready", event
    deploy.execute_complete(context, event)
    [pod] = [
        p["metadata"]["name"]
        for p in (kube.call("GET", "pods") or {}).get("items") or []
        if p["metadata"]["name"].startswith("checkout-canary-")
    ]
    pattern = re.search(r'pod=~"([^"]+)"', pushed["selectors"]["canary"])
    assert pattern and re.fullmatch(pattern.group(1), pod), (pushed["selectors"], pod)

"""The release's promote step on Kubernetes waits deferred: ``PromoteOperator`` starts the stable
Deployment's rollout and defers to ``RolloutStatusTrigger(promotion=True)``; its event finishes
the promotion, or puts back what served and fails the task. Against kmock's emulator and the
test Deployment controller (tests/support/kube_deployments.py), as test_kube_rolling.py does.

Pods take ``START`` seconds to get ready: a stable rollout is never done at the first look, as
in a cluster, where pods take seconds to start.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import json
import time
from typing import Any

import pytest
from support.kube_controller import KubeReleaseCluster
from support.kube_fixtures import kube_fixtures
from support.release_task import ReleaseTaskInstance
from support.waiting import wait_for

from opsdag.platforms.base import PlatformError, WorkloadDriver
from opsdag.platforms.kubernetes import replicasets as rs
from opsdag.platforms.kubernetes.driver import KubernetesDriver
from opsdag.platforms.kubernetes.promotion import PROMOTED_FROM
from opsdag.platforms.kubernetes.rolling import PROMOTING_SINCE
from opsdag.platforms.registry import driver_for, router_for
from opsdag.spec.service import ServiceSpec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
ROUTER = {"kind": "gateway-api", "http_route": "checkout"}
REPLICAS = 4
START = 1.0  # seconds a pod takes to get ready

cluster, kube = kube_fixtures(replicas=REPLICAS, start_seconds=START, reset_timeout=30)


def canary_spec(kube: KubeReleaseCluster) -> ServiceSpec:
    raw = kube.spec(ROUTER).model_dump(mode="json", exclude_none=True)
    raw["platform"]["replicas"] = REPLICAS
    return ServiceSpec.model_validate(raw)


def rolling_spec(kube: KubeReleaseCluster) -> ServiceSpec:
    raw = canary_spec(kube).model_dump(mode="json", exclude_none=True)
    raw["strategy"] = "rolling"
    raw["rolling"] = {"max_surge": 1, "max_unavailable": 0, "bake": "1m"}
    return ServiceSpec.model_validate(raw)


def driver_of(spec: ServiceSpec) -> KubernetesDriver:
    driver = driver_for(spec)
    assert isinstance(driver, KubernetesDriver)
    driver.poll_interval = 0.05
    return driver


def context_for(image: str, strategy: str) -> dict[str, Any]:
    return {"ti": ReleaseTaskInstance({"image": image, "strategy": strategy}), "params": {}}


def cluster_state(kube: KubeReleaseCluster) -> dict[str, Any]:
    """The objects a promotion changes, as the API holds them (without what the controller writes)."""
    stable = kube.get("deployments", "checkout") or {}
    canary = kube.get("deployments", "checkout-canary")
    route = kube.get("httproutes", "checkout") or {}
    annotations = {k: v for k, v in (stable["metadata"].get("annotations") or {}).items() if k != rs.REVISION}
    return {
        "stable": {"annotations": annotations, "spec": stable["spec"]},
        "canary": canary and {"annotations": canary["metadata"].get("annotations"), "spec": canary["spec"]},
        "canary service": kube.get("services", "checkout-canary") is not None,
        "route": route.get("spec"),
    }


def deferred_twice(operator: Any, context: dict[str, Any], kube: KubeReleaseCluster) -> Any:
    """Run the operator twice (a retried task): both defer, the second changes nothing more."""
    from airflow.sdk.exceptions import TaskDeferred

    with pytest.raises(TaskDeferred) as first:
        operator.run(context)
    once = cluster_state(kube)
    with pytest.raises(TaskDeferred) as second:
        operator.run(context)
    assert cluster_state(kube) == once
    assert first.value.method_name == second.value.method_name == "execute_complete"
    return second.value.trigger


def event_of(trigger: Any) -> dict[str, Any]:
    """The trigger's first event, rebuilt from its serialized form as the triggerer does."""
    path, kwargs = trigger.serialize()
    assert kwargs["promotion"] is True
    module, _, name = path.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**{**kwargs, "poll_interval": 0.1})
    return asyncio.run(anext(rebuilt.run())).payload


def promote_operator(spec: ServiceSpec) -> Any:
    from opsdag.operators.workload import PromoteOperator

    return PromoteOperator(task_id="promote", service=spec)


def started_canary(kube: KubeReleaseCluster, spec: ServiceSpec, weight: int = 50) -> KubernetesDriver:
    driver = driver_of(spec)
    driver.start(kube.image("1.1.0"), 2)
    wait_for(lambda: driver.readiness().ready, 20, what="the canary ready")
    router_for(spec).set_weight(weight)
    return driver


# -- a canary beside the stable Deployment -------------------------------------------------------


def test_the_promote_step_defers_then_its_event_finishes_the_promotion(kube: KubeReleaseCluster) -> None:
    spec = canary_spec(kube)
    before = cluster_state(kube)
    driver = started_canary(kube, spec)
    new = kube.image("1.1.0")
    context = context_for(new, "canary")
    promote = promote_operator(spec)
    trigger = deferred_twice(promote, context, kube)
    assert trigger.image == new
    state = cluster_state(kube)
    assert state["stable"]["spec"]["template"]["spec"]["containers"][0]["image"] == new
    record = json.loads(state["canary"]["annotations"][PROMOTED_FROM])
    assert record["image"] == kube.image("1.0.0") and record["since"] <= time.time()
    assert router_for(spec).verify_weight().canary == 100  # the canary serves while stable rolls
    assert not driver.promote_readiness().ready  # the new stable pods take START seconds

    event = event_of(trigger)
    assert event["status"] == "ready" and "4 of 4 replicas updated and available" in event["reason"], event
    result = promote.execute_complete(context, event)
    assert result["stable"]["image"] == new and result["canary"] is None
    assert context["ti"].pushed["promotion"] == event
    expected = copy.deepcopy(before)
    expected["stable"]["spec"]["template"]["spec"]["containers"][0]["image"] = new
    assert cluster_state(kube) == expected  # canary Deployment and Service gone, the route the team's
    assert promote.run(context)["stable"]["image"] == new  # retried once done: nothing to do
    assert cluster_state(kube) == expected


def test_a_stable_rollout_that_crashes_fails_the_task_and_puts_the_stable_image_back(
    kube: KubeReleaseCluster,
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from opsdag.strategies.undo import undo_canary

    spec = canary_spec(kube)
    before = cluster_state(kube)
    driver = started_canary(kube, spec)
    target = driver.rollback_target()
    context = context_for(kube.image("1.1.0"), "canary")
    promote = promote_operator(spec)
    kube.controller.crashing_deployments.add("checkout")  # its new pods will crash-loop
    event = event_of(deferred_twice(promote, context, kube))
    kube.controller.crashing_deployments.clear()
    assert event["status"] == "failed" and "CrashLoopBackOff" in event["reason"], event
    with pytest.raises(AirflowFailException) as failed:
        promote.execute_complete(context, event)
    message = str(failed.value)
    assert "did not roll to" in message and "CrashLoopBackOff" in message, message
    assert f"its image is back to {kube.image('1.0.0')} (the canary still serves)" in message
    state = cluster_state(kube)
    assert state["stable"]["spec"]["template"]["spec"]["containers"][0]["image"] == kube.image("1.0.0")
    assert PROMOTED_FROM not in (state["canary"]["annotations"] or {})  # a new promotion, a new clock
    assert router_for(spec).verify_weight().canary == 100
    wait_for(lambda: driver.status().stable_healthy, 20, what="the stable Deployment healthy again")
    undo_canary(driver, router_for(spec), target)  # what the rollback task does
    assert cluster_state(kube) == before


def test_the_promote_timeout_counts_from_the_start_recorded_on_the_cluster(kube: KubeReleaseCluster) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    spec = canary_spec(kube)
    driver = started_canary(kube, spec)
    assert driver.promote_start() is not None
    since = json.loads(cluster_state(kube)["canary"]["annotations"][PROMOTED_FROM])["since"]
    assert driver.promote_start() is not None  # again: the same start, the same deadline
    assert json.loads(cluster_state(kube)["canary"]["annotations"][PROMOTED_FROM])["since"] == since
    driver.promote_timeout = 0.2
    late = driver.promote_readiness()
    assert late.failed and "not settled 0 s after the promotion started" in late.reason, late
    with pytest.raises(PlatformError, match="not settled 0 s after the promotion started"):
        driver.promote()  # blocking, as runbooks call it: under way, so the same clock; reverted
    stable = cluster_state(kube)["stable"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert stable == kube.image("1.0.0")

    # the trigger's own deadline is a backstop: past it, the task reverts and fails as well
    context = context_for(kube.image("1.1.0"), "canary")
    promote = promote_operator(spec)
    trigger = deferred_twice(promote, context, kube)
    trigger.timeout_at = time.time()
    event = event_of(trigger)
    assert event["status"] == "timeout", event
    with pytest.raises(AirflowFailException, match=r"its image is back to .*1\.0\.0"):
        promote.execute_complete(context, event)
    driver.promote_timeout = 60
    wait_for(lambda: driver.status().stable_healthy, 20, what="the stable Deployment healthy again")
    driver.promote()  # a new promotion: it succeeds
    assert driver.status().stable.image == kube.image("1.1.0")
    assert cluster_state(kube)["canary"] is None


# -- a rolling release in place ------------------------------------------------------------------


def rolled(kube: KubeReleaseCluster, spec: ServiceSpec, updated: int) -> KubernetesDriver:
    driver = driver_of(spec)
    new, since = kube.image("1.1.0"), time.time()
    driver.roll(new, updated, REPLICAS)
    wait_for(lambda: driver.roll_readiness(new, updated, since).ready, 20, what="the batch ready")
    return driver


def test_the_rolling_promote_defers_then_its_event_drops_the_record(kube: KubeReleaseCluster) -> None:
    spec = rolling_spec(kube)
    before = cluster_state(kube)
    rolled(kube, spec, 2)
    new = kube.image("1.1.0")
    context = context_for(new, "rolling")
    promote = promote_operator(spec)
    trigger = deferred_twice(promote, context, kube)
    stable = kube.get("deployments", "checkout") or {}
    record = rs.recorded(stable)
    assert record is not None and record[PROMOTING_SINCE] <= time.time()
    assert not stable["spec"].get("paused")  # the controller rolls the remaining replicas
    event = event_of(trigger)
    assert event["status"] == "ready", event
    result = promote.execute_complete(context, event)
    assert result["stable"]["image"] == new and result["canary"] is None
    expected = copy.deepcopy(before)
    expected["stable"]["spec"]["template"]["spec"]["containers"][0]["image"] = new
    assert cluster_state(kube) == expected  # no record, strategy and paused as the team applied them
    assert promote.run(context)["stable"]["image"] == new  # retried once done: nothing to do


def test_a_rolling_promote_that_crashes_fails_the_task_and_is_undone(kube: KubeReleaseCluster) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    spec = rolling_spec(kube)
    before = cluster_state(kube)
    driver = rolled(kube, spec, 1)
    context = context_for(kube.image("1.1.0"), "rolling")
    promote = promote_operator(spec)
    kube.controller.crashing_deployments.add("checkout")
    event = event_of(deferred_twice(promote, context, kube))
    kube.controller.crashing_deployments.clear()
    assert event["status"] == "failed" and "CrashLoopBackOff" in event["reason"], event
    with pytest.raises(AirflowFailException) as failed:
        promote.execute_complete(context, event)
    message = str(failed.value)
    assert "did not finish rolling to" in message and "set back to revision" in message, message
    assert driver.rolling_deployment() is None  # the record went with the undo's one change

    def serving_old() -> bool:
        status = driver.status()
        return bool(status.stable_healthy and status.stable and status.stable.image == kube.image("1.0.0"))

    wait_for(serving_old, 30, what="1.0.0 serving again")
    after = cluster_state(kube)
    assert after["stable"]["spec"]["template"] == before["stable"]["spec"]["template"]


# -- drivers that promote in one go --------------------------------------------------------------


def test_a_driver_with_its_own_promote_and_no_steps_promotes_in_one_go() -> None:
    from opsdag.platforms.kubernetes.bluegreen import BlueGreenDriver
    from opsdag.platforms.sandbox import SandboxDriver

    for driver in (BlueGreenDriver, SandboxDriver):
        assert driver.promote_start is WorkloadDriver.promote_start
        assert driver.promote_readiness is WorkloadDriver.promote_readiness
    assert KubernetesDriver.promote_start is not WorkloadDriver.promote_start

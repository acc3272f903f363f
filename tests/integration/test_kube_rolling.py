"""Rolling releases in place on Kubernetes: the stable Deployment rolled batch by batch, paused
between batches, promoted or undone to the previous ReplicaSet's template, against kmock's
emulator and the test Deployment controller (tests/support/kube_deployments.py).

The driver is reached as the release's tasks reach it (``driver_for`` of checkout's spec with
``strategy: rolling`` and ``platform.replicas: 4``); the batches are the DAG's own plan
(``rolling_stages``). Pods take ``START`` seconds to get ready, longer than the driver needs
to pause a sized batch: as in a cluster, where pods take seconds to start.
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
from typing import Any

import pytest
from support.kube_controller import KubeReleaseCluster
from support.kube_fixtures import kube_fixtures
from support.release_task import ReleaseTaskInstance
from support.waiting import wait_for

from opsdag.analysis.rollout_state import promoted_state_problems, restored_state_problems
from opsdag.operators.workload import replica_split
from opsdag.platforms.base import PlatformError, RollbackTarget
from opsdag.platforms.kubernetes import replicasets as rs
from opsdag.platforms.kubernetes.driver import KubernetesDriver
from opsdag.platforms.registry import driver_for, router_for
from opsdag.spec.service import ServiceSpec
from opsdag.strategies.stages import rolling_stages
from opsdag.strategies.undo import UNDO
from opsdag.triggers.rollout import RolloutStatusTrigger

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
ROUTER = {"kind": "gateway-api", "http_route": "checkout"}
REPLICAS = 4
START = 1.2  # seconds a pod takes to get ready

cluster, kube = kube_fixtures(replicas=REPLICAS, start_seconds=START, reset_timeout=30)


def rolling_spec(kube: KubeReleaseCluster, **rolling: Any) -> ServiceSpec:
    raw = kube.spec(ROUTER).model_dump(mode="json", exclude_none=True)
    raw["platform"]["replicas"] = REPLICAS
    raw["strategy"] = "rolling"
    raw["rolling"] = {"max_surge": 1, "max_unavailable": 0, "bake": "1m", **rolling}
    return ServiceSpec.model_validate(raw)


def rolling_driver(spec: ServiceSpec) -> KubernetesDriver:
    driver = driver_for(spec)
    assert isinstance(driver, KubernetesDriver) and driver.rolls_in_place
    driver.poll_interval = 0.05
    driver.promote_timeout = 60
    return driver


def deployment(kube: KubeReleaseCluster) -> dict[str, Any]:
    found = kube.get("deployments", "checkout")
    assert found is not None
    return found


def applied(obj: dict[str, Any]) -> dict[str, Any]:
    """What a team applied to the Deployment, as the API holds it: without what the controller owns."""
    meta = obj["metadata"]
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != rs.REVISION}
    return {"labels": meta.get("labels"), "annotations": annotations, "spec": obj["spec"]}


def replica_sets(kube: KubeReleaseCluster) -> dict[str, dict[str, Any]]:
    found = kube.call("GET", "replicasets") or {}
    return {r["metadata"]["name"]: r for r in found.get("items") or []}


def batch_ready(driver: KubernetesDriver, image: str, updated: int, since: float) -> None:
    def ready() -> bool:
        readiness = driver.roll_readiness(image, updated, since)
        assert not readiness.failed, readiness.reason
        return readiness.ready

    wait_for(ready, 30, 0.1, what=f"{updated} new replica(s) of {image} ready")


def serving(kube: KubeReleaseCluster, driver: KubernetesDriver, image: str) -> None:
    """Wait until ``image`` serves on every replica, alone, and the rollout is complete."""

    def done() -> bool:
        status = driver.status()
        stable = status.stable
        return bool(stable and stable.image == image and status.stable_healthy and status.canary is None)

    wait_for(done, 30, 0.1, what=f"{image} serving alone")


def matches(selector: str, pod: str) -> bool:
    pattern = re.search(r'pod=~"([^"]+)"', selector)
    assert pattern is not None, selector
    return re.fullmatch(pattern.group(1), pod) is not None


def pods_by_image(kube: KubeReleaseCluster) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for pod in (kube.call("GET", "pods") or {}).get("items") or []:
        image = pod["spec"]["containers"][0]["image"]
        found.setdefault(image, []).append(pod["metadata"]["name"])
    return found


# -- a healthy release ---------------------------------------------------------------------------


def test_a_healthy_release_rolls_batch_by_batch_paused_between_them_then_is_promoted(
    kube: KubeReleaseCluster,
) -> None:
    spec = rolling_spec(kube)
    driver = rolling_driver(spec)
    old, new = kube.image("1.0.0"), kube.image("1.1.0")
    before = applied(deployment(kube))
    target = driver.rollback_target()
    assert (target.image, target.instances) == (old, REPLICAS)
    plans = rolling_stages(spec)
    assert [p.canary_instances for p in plans] == [1, 2, 3, 4]
    for index, plan in enumerate(plans):
        since = time.time()
        driver.roll(new, plan.canary_instances, spec.instances())
        if index == 0:
            held = deployment(kube)
            driver.roll(new, plan.canary_instances, spec.instances())  # twice: the same state
            assert applied(deployment(kube)) == applied(held)
        batch_ready(driver, new, plan.canary_instances, since)
        now = deployment(kube)
        assert now["spec"]["paused"] is True
        assert now["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
        wait_for(
            lambda n=plan.canary_instances: (
                (deployment(kube).get("status") or {}).get("updatedReplicas") == n
            ),
            10,
            what="updatedReplicas at the batch's count",
        )
        status = driver.status()
        assert status.canary is not None and status.stable is not None
        assert (status.canary.image, status.canary.ready_instances) == (new, plan.canary_instances)
        # with maxUnavailable 0 the old pods leave one batch later: the controller holds the surge
        assert status.stable.instances == REPLICAS - plan.canary_instances + 1
        split = replica_split(status, plan.weight)
        assert split.canary == pytest.approx(100 * plan.canary_instances / (REPLICAS + 1), abs=0.1)
        selectors = driver.metric_selectors()
        names = pods_by_image(kube)
        assert names[new] and all(matches(selectors["canary"], p) for p in names[new])
        assert not any(matches(selectors["canary"], p) for p in names[old])
        assert all(matches(selectors["stable"], p) for p in names[old])
        assert not any(matches(selectors["stable"], p) for p in names[new])
    driver.promote()
    driver.promote()  # twice: nothing more to do
    serving(kube, driver, new)
    assert promoted_state_problems(driver.status(), router_for(spec).verify_weight(), new) == []
    after = deployment(kube)
    assert rs.ROLLING_FROM not in (after["metadata"].get("annotations") or {})
    expected = copy.deepcopy(before)
    expected["spec"]["template"]["spec"]["containers"][0]["image"] = new
    assert applied(after) == expected


# -- undo --------------------------------------------------------------------------------------


def undone_exactly(
    kube: KubeReleaseCluster, driver: KubernetesDriver, target: RollbackTarget, before: dict
) -> None:
    """Undo twice; the Deployment is as ``before`` and its template is the previous ReplicaSet's."""
    newest = max(rs.revision(r) for r in replica_sets(kube).values())
    router = router_for(driver.spec)
    UNDO["rolling"](driver, router, target)  # the rollback task's undo
    driver.undo_roll(target)  # twice: nothing more to do
    serving(kube, driver, target.image)
    assert restored_state_problems(driver.status(), router.verify_weight(), target) == []
    after = deployment(kube)
    assert applied(after) == before
    assert rs.revision(after) == newest + 1, "the previous ReplicaSet is reused at the next revision"
    restored = [r for r in replica_sets(kube).values() if rs.revision(r) == rs.revision(after)]
    assert len(restored) == 1
    assert rs.without_hash(restored[0]["spec"]["template"]) == after["spec"]["template"]
    assert driver.status().canary is None


def test_a_failing_release_is_undone_to_the_previous_template_exactly(kube: KubeReleaseCluster) -> None:
    spec = rolling_spec(kube)
    driver = rolling_driver(spec)
    before = applied(deployment(kube))
    target = driver.rollback_target()
    new = kube.image("1.1.0")
    since = time.time()
    driver.roll(new, 1, REPLICAS)
    batch_ready(driver, new, 1, since)
    since = time.time()
    driver.roll(new, 2, REPLICAS)
    # the batch's wait as the release defers it: in the triggerer, through roll_readiness
    trigger = RolloutStatusTrigger(
        service=spec.model_dump(mode="json"),
        image=new,
        timeout_at=time.time() + 30,
        poll_interval=0.1,
        updated=2,
        started_at=since,
    )
    assert trigger.serialize()[1]["updated"] == 2
    event = asyncio.run(anext(trigger.run())).payload
    assert (event["status"], event["abort"]) == ("ready", None), event
    assert "2 of 2 new replica(s) ready" in event["reason"]
    undone_exactly(kube, driver, target, before)


def test_a_crashing_batch_fails_naming_the_pod_and_is_undone(kube: KubeReleaseCluster) -> None:
    spec = rolling_spec(kube, max_surge=2)
    driver = rolling_driver(spec)
    before = applied(deployment(kube))
    target = driver.rollback_target()
    crash = kube.image("1.4.0-crash")
    since = time.time()
    driver.roll(crash, 2, REPLICAS)
    failed = wait_for(
        lambda: (r := driver.roll_readiness(crash, 2, since)).failed and r, 20, what="a failed batch"
    )
    assert re.search(
        r"pod checkout-\w+-\w+, container app \(.*1\.4\.0-crash\): CrashLoopBackOff", failed.reason
    )
    undone_exactly(kube, driver, target, before)


def test_a_stalled_batch_fails_after_the_progress_deadline_and_is_undone(kube: KubeReleaseCluster) -> None:
    kube.call("PATCH", "deployments", "checkout", {"spec": {"progressDeadlineSeconds": 3}})
    spec = rolling_spec(kube)
    driver = rolling_driver(spec)
    before = applied(deployment(kube))
    target = driver.rollback_target()
    stall = kube.image("1.5.0-stall")
    since = time.time()
    driver.roll(stall, 1, REPLICAS)
    assert not driver.roll_readiness(stall, 1, since).failed
    failed = wait_for(
        lambda: (r := driver.roll_readiness(stall, 1, since)).failed and r, 20, what="the deadline"
    )
    assert time.time() - since >= 3
    assert "ProgressDeadlineExceeded" in failed.reason and "progressDeadlineSeconds: 3" in failed.reason
    undone_exactly(kube, driver, target, before)


def test_an_image_that_cannot_be_pulled_is_refused_before_any_change(kube: KubeReleaseCluster) -> None:
    driver = rolling_driver(rolling_spec(kube))
    before = deployment(kube)
    with pytest.raises(
        PlatformError, match=r"9\.9\.9 cannot run here: .*Deployment shop/checkout is unchanged"
    ):
        driver.roll(kube.image("9.9.9"), 1, REPLICAS)
    assert applied(deployment(kube)) == applied(before)


# -- refusals and API faults -------------------------------------------------------------------


def test_replicas_other_than_planned_are_refused_naming_the_field(kube: KubeReleaseCluster) -> None:
    spec = rolling_spec(kube)
    raw = spec.model_dump(mode="json", exclude_none=True)
    raw["platform"]["replicas"] = 3
    driver = rolling_driver(ServiceSpec.model_validate(raw))
    with pytest.raises(
        PlatformError, match=r"^platform\.replicas is 3 but Deployment shop/checkout runs spec"
    ):
        driver.rollback_target()
    with pytest.raises(
        PlatformError, match=r"^platform\.replicas is 3 but Deployment shop/checkout runs spec"
    ):
        driver.roll(kube.image("1.1.0"), 1, 3)


def test_forbidden_and_missing_stop_the_release_before_any_change(kube: KubeReleaseCluster) -> None:
    driver = rolling_driver(rolling_spec(kube))
    before = applied(deployment(kube))
    kube.kube.forbidden.add(("list", "replicasets"))
    with pytest.raises(PlatformError, match=r"may not, in namespace shop: list replicasets\.apps"):
        driver.rollback_target()
    kube.kube.forbidden.clear()
    kube.kube.fail("patch", "checkout", 403, times=10)
    with pytest.raises(PlatformError, match=r"^patch deployments/checkout in namespace shop: 403 Forbidden"):
        driver.roll(kube.image("1.1.0"), 1, REPLICAS)
    assert applied(deployment(kube)) == before
    raw = rolling_spec(kube).model_dump(mode="json", exclude_none=True)
    raw["platform"]["deployment"] = "nowhere"
    missing = rolling_driver(ServiceSpec.model_validate(raw))
    with pytest.raises(PlatformError, match=r"^get deployments/nowhere in namespace shop: not found"):
        missing.roll(kube.image("1.1.0"), 1, REPLICAS)


def test_server_errors_and_conflicts_are_retried(kube: KubeReleaseCluster) -> None:
    driver = rolling_driver(rolling_spec(kube))
    before = applied(deployment(kube))
    target = driver.rollback_target()
    new = kube.image("1.1.0")
    unavailable = kube.kube.fail("patch", "checkout", 500, times=2)
    conflict = kube.kube.fail("patch", "checkout", 409, times=1)
    listing = kube.kube.fail("list", "replicasets", 503, times=2)
    since = time.time()
    driver.roll(new, 1, REPLICAS)
    batch_ready(driver, new, 1, since)
    assert (unavailable.served, conflict.served, listing.served) == (2, 1, 2)
    assert deployment(kube)["spec"]["paused"] is True
    undoing = kube.kube.fail("patch", "checkout", 503, times=1)
    undone_exactly(kube, driver, target, before)
    assert undoing.served == 1


def test_every_call_of_a_rolling_release_is_allowed_by_the_documented_role(
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
    driver = rolling_driver(rolling_spec(kube))
    target = driver.rollback_target()
    new = kube.image("1.1.0")
    since = time.time()
    driver.roll(new, 1, REPLICAS)
    batch_ready(driver, new, 1, since)
    driver.status(), driver.metric_selectors(), driver.endpoints("canary"), driver.endpoints("stable")
    driver.undo_roll(target)
    since = time.time()
    driver.roll(new, 1, REPLICAS)
    batch_ready(driver, new, 1, since)
    driver.promote()
    assert ("list", "replicasets") in calls
    assert all(rbac.covers(verb, resource) for verb, resource in calls), sorted(calls)


# -- through the release's operators -----------------------------------------------------------


def test_the_release_operators_roll_in_place_then_the_rollback_operator_undoes_it(
    kube: KubeReleaseCluster,
) -> None:
    from airflow.sdk.exceptions import TaskDeferred

    from opsdag.operators.rollback import RollbackOperator
    from opsdag.operators.workload import ReplaceBatchOperator, StartVersionOperator

    spec = rolling_spec(kube)
    before = applied(deployment(kube))
    target = rolling_driver(spec).rollback_target()
    new = kube.image("1.1.0")
    ti = ReleaseTaskInstance({"image": new, "strategy": "rolling"})
    context = {"ti": ti, "params": {}}
    first, second = rolling_stages(spec)[:2]

    def deferred_then_resumed(operator: Any) -> Any:
        for _ in range(2):  # a retried task: the same batch, the same state
            with pytest.raises(TaskDeferred) as deferred:
                operator.run(context)
        trigger = deferred.value.trigger
        assert trigger.updated == operator_count(operator) and trigger.abort is None
        event = asyncio.run(anext(trigger.run())).payload
        assert event["status"] == "ready", event
        return operator.execute_complete(context, event)

    def operator_count(operator: Any) -> int:
        return operator.instances if isinstance(operator, StartVersionOperator) else operator.canary

    deploy = StartVersionOperator(
        task_id="deploy", service=spec, strategy="rolling", image=new, instances=first.canary_instances
    )
    deferred_then_resumed(deploy)
    assert deployment(kube)["spec"]["paused"] is True
    canary_pods = pods_by_image(kube)[new]
    assert len(canary_pods) == 1 and matches(ti.pushed["selectors"]["canary"], canary_pods[0])
    replace = ReplaceBatchOperator(
        task_id="replace",
        service=spec,
        strategy="rolling",
        image=new,
        canary=second.canary_instances,
        stable=second.stable_instances,
        weight=second.weight,
    )
    result = deferred_then_resumed(replace)
    assert result["split"]["canary"] == 40.0 and result["split"]["requested"] == second.weight == 50
    assert not result["split"]["exact"]  # 2 new beside 3 old: the controller holds the surge
    ti.pushed["preflight"] = {
        "rollback_target": target.to_dict(),
        "checks": [{"name": "rollback target recorded", "ok": True, "detail": ""}],
    }
    rollback = RollbackOperator(task_id="rollback", service=spec)
    for _ in range(2):
        outcome = rollback.run(context)
        assert outcome["problems"] == [] and outcome["stable_image"] == kube.image("1.0.0")
    assert applied(deployment(kube)) == before


def test_a_failed_gate_starts_the_undo_from_its_trigger(kube: KubeReleaseCluster) -> None:
    """No router can take traffic off pods rolled in place: the gate's abort starts the undo at once
    (the previous revision's template back, unpaused), and the rollback task finishes it."""
    import logging

    from opsdag.triggers.traffic_abort import TrafficAbort, abort_request, describe_abort

    spec = rolling_spec(kube)
    driver = rolling_driver(spec)
    before = applied(deployment(kube))
    target = driver.rollback_target()
    new = kube.image("1.1.0")
    since = time.time()
    driver.roll(new, 2, REPLICAS)
    batch_ready(driver, new, 2, since)
    newest = max(rs.revision(r) for r in replica_sets(kube).values())
    abort = TrafficAbort(abort_request(spec, "weight_zero"), logging.getLogger("test"))
    record = asyncio.run(abort.perform())
    assert (record["action"], record["error"]) == ("undo_roll", None), record
    assert "set back to revision" in describe_abort(record)
    now = deployment(kube)
    assert driver.rolling_deployment() is None  # the record is gone with the undo's one change
    assert now["spec"]["template"]["spec"]["containers"][0]["image"] == target.image
    assert not now["spec"].get("paused")
    again = asyncio.run(abort.perform())  # a second abort finds no rolling release: the router's call
    assert again["action"] == "weight_zero" and again["error"] is None, again
    router = router_for(driver.spec)
    UNDO["rolling"](driver, router, target)  # the rollback task checks it against the target, waits
    serving(kube, driver, target.image)
    assert restored_state_problems(driver.status(), router.verify_weight(), target) == []
    assert applied(deployment(kube)) == before
    assert rs.revision(deployment(kube)) == newest + 1, "the previous ReplicaSet is reused"

"""A release stage's weight on a replica ratio waits deferred while the canary's new pods start.

``canary.stage_<w>.set_weight`` (``SetWeightOperator``) scales the canary Deployment at once
and hands the wait to ``WeightSettledTrigger``, run here as the triggerer runs it (rebuilt from
its serialized form, reading through the provider's async client), then resumed with its
event. Pods take ``START_SECONDS`` to become ready (``KubeReleaseCluster``'s controller), so a
task that waited in the worker would take that long to return.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from support.kube_controller import KubeReleaseCluster
from support.kube_fixtures import kube_fixtures
from support.kube_ratio_support import ratio_router, shared_service
from support.release_task import ReleaseTaskInstance
from support.waiting import wait_for

from opsdag.operators.traffic import SetWeightOperator
from opsdag.platforms.base import PlatformError, TrafficSplit
from opsdag.platforms.routers.replica_ratio import FAILED, REQUESTED

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
START_SECONDS = 4.0  # long beside the few API calls a stage makes, even on a busy machine

cluster, kube = kube_fixtures(prepare=shared_service, start_seconds=START_SECONDS)


class Stage:
    """``canary.stage_<weight>.set_weight`` of checkout's release of 1.1.0, behind a replica ratio."""

    def __init__(self, kube: KubeReleaseCluster, weight: int) -> None:
        self.kube = kube
        self.spec = kube.spec(ratio_router())
        self.ti = ReleaseTaskInstance({"image": kube.image("1.1.0"), "strategy": "canary"})
        self.context = self.ti.context()
        self.task = SetWeightOperator(
            task_id=f"canary.stage_{weight}.set_weight", service=self.spec, strategy="canary", weight=weight
        )

    def start_canary(self, stable: int) -> None:
        """checkout at ``stable`` replicas with a ready canary of 1 pod beside it (the deploy step's)."""
        self.kube.reset(replicas=stable)
        self.task.driver.start(self.kube.image("1.1.0"), 1)
        wait_for(lambda: self.task.driver.readiness().ready, 20, what="the canary ready")

    def deferred(self) -> tuple[TaskDeferred, float]:
        """Run the task as a worker does: it defers; how long it held the worker (s)."""
        began = time.monotonic()
        with pytest.raises(TaskDeferred) as deferred:
            self.task.execute(self.context)
        return deferred.value, time.monotonic() - began

    def resumed(self, deferred: TaskDeferred) -> Any:
        """The trigger run as the triggerer runs it, then the task resumed with its event."""
        path, kwargs = deferred.trigger.serialize()
        module, _, name = path.rpartition(".")
        trigger = getattr(importlib.import_module(module), name)(**{**kwargs, "poll_interval": 0.1})
        self.event = asyncio.run(anext(trigger.run())).payload
        next_kwargs = {**(deferred.kwargs or {}), "event": self.event}
        return self.task.resume_execution(deferred.method_name, next_kwargs, self.context)

    def replicas(self) -> tuple[int, int]:
        stable = self.kube.get("deployments", "checkout") or {}
        canary = self.kube.get("deployments", "checkout-canary") or {}
        return stable["spec"]["replicas"], canary["spec"]["replicas"]


def test_the_stage_defers_while_canary_pods_start_then_says_the_real_split(kube: KubeReleaseCluster) -> None:
    stage = Stage(kube, 30)
    stage.start_canary(stable=4)
    deferred, held = stage.deferred()
    assert held < START_SECONDS, f"held the worker {held:.1f} s while the pod started"
    assert stage.replicas() == (4, 2)  # 30 % beside 4: 2 of 6 is the nearest
    split = stage.task.router.verify_weight()  # the new pod is still starting
    assert (split.canary, split.requested) == (20.0, 30)

    result = stage.resumed(deferred)
    assert stage.event["status"] == "settled" and stage.event["abort"] is None, stage.event
    assert result == {
        **TrafficSplit(stable=66.7, canary=33.3, exact=False, requested=30).to_dict(),
        "said": "asked 30 %, got 2 of 6 replicas = 33.3 %",
    }


def test_a_stage_already_in_force_does_not_defer(kube: KubeReleaseCluster) -> None:
    """40 % beside 2 is the canary's 1 pod (1 of 3): nothing to wait for, no triggerer round trip."""
    stage = Stage(kube, 40)
    stage.start_canary(stable=2)
    result = stage.task.execute(stage.context)
    assert result["said"] == "asked 40 %, got 1 of 3 replicas = 33.3 %"
    assert stage.replicas() == (2, 1)


def test_a_canary_that_crash_loops_while_its_weight_settles_fails_the_stage_naming_the_pod(
    kube: KubeReleaseCluster,
) -> None:
    stage = Stage(kube, 50)
    stage.start_canary(stable=2)
    kube.controller.crashing_deployments.add("checkout-canary")  # its new pods crash-loop
    deferred, _ = stage.deferred()
    assert stage.replicas() == (2, 2)
    with pytest.raises(AirflowFailException) as failed:
        stage.resumed(deferred)
    message = str(failed.value)
    assert message.startswith(
        "50 % not reached, the new version failed: Deployment shop/checkout-canary: pod "
    )
    assert "CrashLoopBackOff" in message
    assert "the trigger took traffic off the new version (weight_zero)" in message
    assert stage.ti.pushed["error"] == f"AirflowFailException: {message}"  # for the report
    # safety first: its ready pod went with the crashing one, and the image stays out
    assert stage.replicas() == (2, 0)
    assert stage.task.router.verify_weight().canary == 0
    annotations = kube.get("deployments", "checkout-canary")["metadata"]["annotations"]
    assert "CrashLoopBackOff" in annotations[FAILED]
    with pytest.raises(PlatformError, match="the canary failed, it gets no traffic: pod "):
        stage.task.router.start_weight(50)


def test_running_the_stage_twice_scales_once_and_leaves_the_same_replicas(kube: KubeReleaseCluster) -> None:
    stage = Stage(kube, 50)
    stage.start_canary(stable=4)
    first, _ = stage.deferred()
    after_first = kube.get("deployments", "checkout-canary")
    # The retry must not patch the canary again: a patch now would be refused, failing the task.
    fault = kube.kube.fail("patch", "checkout-canary", 403, times=1)
    retried, _ = stage.deferred()  # its pods still start: it defers again
    assert fault.served == 0, "the retry patched the canary again"
    again = kube.get("deployments", "checkout-canary")
    assert (again["spec"], again["metadata"]["generation"]) == (
        after_first["spec"],
        after_first["metadata"]["generation"],
    )
    assert again["metadata"]["annotations"][REQUESTED] == "50"
    kube.clear_faults()
    assert retried.trigger.timeout_at >= first.trigger.timeout_at
    result = stage.resumed(retried)
    assert stage.replicas() == (4, 4)
    assert (result["canary"], result["requested"], result["exact"]) == (50.0, 50, True)
    assert stage.task.execute(stage.context) == result  # once in force, a third run only reads it
    assert stage.replicas() == (4, 4)

"""When a replica ratio's weight change is in force, failed, or still settling (pure, no cluster).

``settled_split`` decides for both the router's own wait (``set_weight``) and the release
stage's deferred one (``WeightSettledTrigger``): a table of canary Deployments and pods.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from opsdag.platforms.base import Readiness
from opsdag.platforms.registry import ROUTERS
from opsdag.platforms.routers.replica_ratio import settled_split
from opsdag.triggers.weight_settle import WeightSettledTrigger

IMAGE = "registry.local/shop/checkout:1.1.0"
NAME = "Deployment shop/checkout-canary"


def canary(
    replicas: int,
    *,
    ready: int,
    total: int | None = None,
    seen: bool = True,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The canary Deployment asking ``replicas``; its status: ``ready`` of ``total`` pods ready."""
    return {
        "metadata": {
            "name": "checkout-canary",
            "namespace": "shop",
            "generation": 4,
            "annotations": annotations,
        },
        "spec": {
            "replicas": replicas,
            "template": {"spec": {"containers": [{"name": "app", "image": IMAGE}]}},
        },
        "status": {
            "observedGeneration": 4 if seen else 3,
            "replicas": replicas if total is None else total,
            "readyReplicas": ready,
            "updatedReplicas": replicas if total is None else total,
        },
    }


def pod(name: str, *, ready: bool = True, crash: bool = False, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app": "checkout", "track": "canary"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-30T08:00:00Z"
    waiting = {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed container"}
    state = {"waiting": waiting} if crash else {"running": {}}
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": "app", "image": IMAGE}]},
        "status": {
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "podIP": "10.1.0.7",
            "containerStatuses": [{"name": "app", "image": IMAGE, "state": state, "restartCount": 3}],
        },
    }


@pytest.mark.parametrize(
    ("deployment", "pods", "expected"),
    [
        (None, [], Readiness(True, reason="no canary Deployment: the stable takes everything")),
        (
            canary(2, ready=2),
            [pod("c1"), pod("c2")],
            Readiness(True, reason=f"{NAME}: 2 of 2 pod(s) take traffic"),
        ),
        (
            canary(2, ready=1),
            [pod("c1"), pod("c2", ready=False)],
            Readiness(False, reason=f"{NAME}: 1 of 2 pod(s) take traffic"),
        ),
        (  # the status counts 2 ready, but one of them is leaving: not yet in force
            canary(2, ready=2),
            [pod("c1"), pod("c2", deleting=True)],
            Readiness(False, reason=f"{NAME}: 1 of 2 pod(s) take traffic"),
        ),
        (  # scaled down from 3: the third pod still runs and takes traffic
            canary(2, ready=2, total=3),
            [pod("c1"), pod("c2"), pod("c3")],
            Readiness(False, reason=f"{NAME}: 3 of 2 pod(s) take traffic"),
        ),
        (  # the replicas were just patched: the controller has not acted yet
            canary(3, ready=2, seen=False),
            [pod("c1"), pod("c2")],
            Readiness(False, reason=f"{NAME}: 2 of 3 pod(s) take traffic (new spec not yet seen)"),
        ),
        (
            canary(0, ready=0),
            [],
            Readiness(True, reason=f"{NAME}: 0 of 0 pod(s) take traffic"),
        ),
    ],
)
def test_in_force_once_the_pods_taking_traffic_are_the_replicas_asked(
    deployment: dict[str, Any] | None, pods: list[dict[str, Any]], expected: Readiness
) -> None:
    assert settled_split(deployment, pods) == expected


def test_a_pod_that_crash_loops_while_it_settles_is_a_failure_naming_the_pod() -> None:
    result = settled_split(canary(2, ready=1), [pod("c1"), pod("c2", ready=False, crash=True)])
    assert result.failed and not result.ready
    assert result.reason == (
        f"{NAME}: pod c2, container app ({IMAGE}): CrashLoopBackOff: back-off 10s restarting failed "
        "container (restarted 3 time(s))"
    )


def test_a_known_unpullable_image_fails_at_once_but_not_at_0_replicas() -> None:
    why = f"{IMAGE}: not found in its registry"
    result = settled_split(canary(2, ready=0, annotations={"opsdag.io/unpullable": why}), [])
    assert result == Readiness(False, failed=True, reason=f"{NAME}: {why}")
    # scaled to 0 (the abort): nothing left to fail, the split is in force
    assert settled_split(canary(0, ready=0, annotations={"opsdag.io/unpullable": why}), []).ready


@pytest.mark.parametrize("kind", sorted(ROUTERS))
def test_only_a_replica_ratio_settles_later(kind: str) -> None:
    """The others' change is in force when made: their stage never defers, and says so."""
    module, _, name = ROUTERS[kind].partition(":")
    router = getattr(importlib.import_module(module), name)
    assert router.settles_later is (kind == "replica-ratio")
    if not router.settles_later:
        assert router.weight_settled(router.__new__(router)) == Readiness(
            True, reason="in force as soon as it is set"
        )


def test_the_trigger_is_rebuilt_from_what_it_serialises() -> None:
    service = {"name": "checkout", "platform": {"kind": "kubernetes"}}
    trigger = WeightSettledTrigger(
        service=service,
        weight=25,
        timeout_at=1_800_000_000.0,
        poll_interval=0.5,
        abort={"service": service, "action": "weight_zero"},
    )
    path, kwargs = trigger.serialize()
    assert path == "opsdag.triggers.weight_settle.WeightSettledTrigger"
    assert WeightSettledTrigger(**kwargs).serialize() == (path, kwargs)
    with pytest.raises(ValueError, match="abort action must be one of"):
        WeightSettledTrigger(
            service=service, weight=25, timeout_at=0, abort={"service": service, "action": "x"}
        )

"""The pure parts of a rolling release in place on Kubernetes (``kubernetes.replicasets``), the
batches planned for ``platform.replicas``, and the split a batch reports.

Every patch is applied to checkout's Deployment (a JSON merge patch, as the API server does)
and the result validated against the Kubernetes 1.33 schemas, as tests/unit/test_kube_manifests.py.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import kubernetes_validate
import pytest
from support.kube_controller import checkout_objects

from opsdag.operators.workload import replica_split
from opsdag.platforms.base import PlatformError, TrackState, WorkloadStatus
from opsdag.platforms.kubernetes import replicasets as rs
from opsdag.spec.platform_kinds import KubernetesPlatformSpec

IMAGE = "registry.example.com/shop/checkout"
K8S = "1.33.0"


def merged(obj: Any, patch: Any) -> Any:
    """RFC 7386: what the API server stores after a JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(obj) if isinstance(obj, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merged(result.get(key), value)
    return result


def valid(obj: dict) -> dict:
    assert kubernetes_validate.validate(obj, K8S, strict=True) == K8S.rsplit(".", 1)[0]
    return obj


def stable(revision: int = 3, **spec: Any) -> dict[str, Any]:
    deployment = checkout_objects("shop", f"{IMAGE}:1.0.0", 4)["deployments"]
    deployment["metadata"].update(uid="d-1", resourceVersion="41", annotations={rs.REVISION: str(revision)})
    deployment["spec"].update(spec)
    return deployment


def replica_set(
    deployment: dict, hashed: str, revision: int, replicas: int, image: str | None = None
) -> dict:
    template = copy.deepcopy(deployment["spec"]["template"])
    template["metadata"]["labels"][rs.HASH_LABEL] = hashed
    if image:
        template["spec"]["containers"][0]["image"] = image
    return {
        "metadata": {
            "name": f"checkout-{hashed}",
            "annotations": {rs.REVISION: str(revision)},
            "ownerReferences": [{"kind": "Deployment", "uid": "d-1", "name": "checkout"}],
        },
        "spec": {"replicas": replicas, "template": template},
    }


def pod(hashed: str, suffix: str, *, ready: bool = True, waiting: str | None = None) -> dict[str, Any]:
    state = {"waiting": {"reason": waiting, "message": "back-off"}} if waiting else {"running": {}}
    return {
        "metadata": {
            "name": f"checkout-{hashed}-{suffix}",
            "labels": {"app": "checkout", rs.HASH_LABEL: hashed},
        },
        "status": {
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": "app", "image": "x", "state": state, "restartCount": 2}],
        },
    }


# -- the patches -------------------------------------------------------------------------------


def test_the_first_batch_records_what_it_changes_and_unpauses_with_the_spec_steps() -> None:
    before = stable()
    patch = rs.roll_patch(before, f"{IMAGE}:1.1.0", "app", 1, 0)
    after = valid(merged(before, patch))
    assert patch["metadata"]["resourceVersion"] == "41"
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == f"{IMAGE}:1.1.0"
    assert after["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert "paused" not in after["spec"]
    assert rs.recorded(after) == {"revision": 3, "image": f"{IMAGE}:1.0.0", "strategy": None, "paused": None}
    # the next batch keeps the first record and the template
    paused = merged(after, rs.pause_patch(after))
    assert valid(paused)["spec"]["paused"] is True
    again = rs.roll_patch(paused, f"{IMAGE}:1.1.0", "app", 1, 0)
    assert "annotations" not in again["metadata"] and "template" not in again["spec"]
    assert "paused" not in valid(merged(paused, again))["spec"]


def test_a_version_label_in_the_template_follows_the_image() -> None:
    before = stable()
    before["spec"]["template"]["metadata"]["labels"]["version"] = "1.0.0"
    after = valid(merged(before, rs.roll_patch(before, f"{IMAGE}:1.1.0", "app", 1, 0)))
    assert after["spec"]["template"]["metadata"]["labels"] == {
        "app": "checkout",
        "track": "stable",
        "version": "1.1.0",
    }


@pytest.mark.parametrize(
    "original",
    [
        {},
        {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "50%", "maxUnavailable": 1}}},
        {"paused": False, "minReadySeconds": 5},
    ],
)
def test_undo_puts_the_deployment_back_exactly(original: dict[str, Any]) -> None:
    before = stable(**original)
    previous = replica_set(before, "abc123", 3, 4)
    before["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}]
    previous["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}]
    rolled = merged(before, rs.roll_patch(before, f"{IMAGE}:1.1.0", "app", 2, 1))
    rolled["spec"]["template"]["spec"]["containers"][0].pop("env")  # the new template differs more
    rolled = merged(rolled, rs.pause_patch(rolled))
    record = rs.recorded(rolled)
    assert record is not None
    template = rs.previous_template(rolled, [previous, replica_set(rolled, "def456", 4, 2)], record)
    restored = valid(merged(rolled, rs.restore_patch(rolled, record, template)))
    expected = copy.deepcopy(before)
    if expected["spec"].get("paused") is False:
        expected["spec"].pop(
            "paused"
        )  # a merge patch cannot tell false from absent: as the API server omits it
        restored["spec"].pop("paused", None)
    assert {k: v for k, v in restored.items() if k != "metadata"} == {
        k: v for k, v in expected.items() if k != "metadata"
    }
    assert restored["metadata"]["annotations"] == before["metadata"]["annotations"]


def test_promote_restores_the_strategy_keeping_the_new_template_and_the_record_until_done() -> None:
    before = stable()
    rolled = merged(before, rs.roll_patch(before, f"{IMAGE}:1.1.0", "app", 1, 0))
    record = rs.recorded(rolled)
    finishing = valid(merged(rolled, rs.restore_patch(rolled, record, None, drop_record=False)))
    assert "strategy" not in finishing["spec"] and "paused" not in finishing["spec"]
    assert finishing["spec"]["template"]["spec"]["containers"][0]["image"] == f"{IMAGE}:1.1.0"
    assert rs.recorded(finishing) == record
    done = merged(finishing, rs.restore_patch(finishing, record, None))
    assert rs.recorded(done) is None


def test_a_revision_whose_replicaset_is_gone_cannot_be_undone() -> None:
    rolled = stable()
    with pytest.raises(
        PlatformError, match=r"no ReplicaSet of revision 3 .* set its image back to .*1\.0\.0 by hand"
    ):
        rs.previous_template(rolled, [], {"revision": 3, "image": f"{IMAGE}:1.0.0"})


@pytest.mark.parametrize(
    ("current", "wanted", "patch"),
    [
        ({"a": 1, "b": {"c": 2, "d": 3}}, {"a": 1, "b": {"c": 2}}, {"b": {"d": None}}),
        ({"l": [1, 2]}, {"l": [2]}, {"l": [2]}),
        ({}, {"x": {"y": 1}}, {"x": {"y": 1}}),
        ({"same": True}, {"same": True}, {}),
    ],
)
def test_merge_patch_to(current: dict, wanted: dict, patch: dict) -> None:
    assert rs.merge_patch_to(current, wanted) == patch
    assert merged(current, patch) == wanted


# -- reading ReplicaSets -------------------------------------------------------------------------


def test_the_new_replicaset_is_the_one_running_the_template_and_others_are_ignored() -> None:
    deployment = stable()
    old = replica_set(deployment, "old111", 3, 4, image=f"{IMAGE}:0.9.0")
    new = replica_set(deployment, "new222", 4, 1)
    stranger = replica_set(deployment, "zzz999", 9, 1)
    stranger["metadata"]["ownerReferences"][0]["uid"] = "another"
    found_new, found_old = rs.split_replica_sets(deployment, [new, stranger, old])
    assert found_new is new and found_old == [old]


def test_metric_selectors_name_the_new_and_the_old_replicasets_pods() -> None:
    deployment = stable()
    new = replica_set(deployment, "new222", 5, 2)
    old = [replica_set(deployment, "old111", 3, 1), replica_set(deployment, "old333", 4, 2)]
    selectors = rs.selectors("shop", "checkout", new, old)
    assert selectors == {
        "canary": 'namespace="shop", pod=~"checkout-new222-[a-z0-9]+"',
        "stable": 'namespace="shop", pod=~"checkout-(old111|old333)-[a-z0-9]+"',
    }


def batch(
    deployment: dict, pods: list[dict], *, updated: int = 2, since: float = 1000.0, now: float = 1010.0
):
    sets = [
        replica_set(deployment, "old111", 3, 4, image=f"{IMAGE}:1.0.0"),
        replica_set(deployment, "new222", 4, 2),
    ]
    return rs.batch_readiness(
        deployment, sets, pods, image=f"{IMAGE}:1.1.0", container="app", updated=updated, since=since, now=now
    )


def rolled_deployment(deadline: int = 30) -> dict:
    deployment = stable(progressDeadlineSeconds=deadline)
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = f"{IMAGE}:1.1.0"
    return deployment


@pytest.mark.parametrize(
    ("pods", "now", "ready", "failed", "reason"),
    [
        (
            [pod("new222", "a"), pod("new222", "b"), pod("old111", "c")],
            1010,
            True,
            False,
            "2 of 2 new replica(s) ready, 1 old",
        ),
        (
            [pod("new222", "a"), pod("new222", "b", ready=False)],
            1010,
            False,
            False,
            "1 of 2 new replica(s) ready",
        ),
        (
            [pod("new222", "a"), pod("new222", "b", ready=False, waiting="CrashLoopBackOff")],
            1010,
            False,
            True,
            "pod checkout-new222-b, container app (x): CrashLoopBackOff",
        ),
        (
            [pod("new222", "a"), pod("old111", "b", ready=False, waiting="CrashLoopBackOff")],
            1010,
            False,
            False,
            "1 of 2 new",
        ),
        (
            [pod("new222", "a")],
            1031,
            False,
            True,
            "ProgressDeadlineExceeded: 1 of 2 new replica(s) ready, 0 old running 31 s after the batch "
            "started (spec.progressDeadlineSeconds: 30)",
        ),
    ],
)
def test_batch_readiness(pods: list[dict], now: float, ready: bool, failed: bool, reason: str) -> None:
    result = batch(rolled_deployment(), pods, now=now)
    assert (result.ready, result.failed) == (ready, failed)
    assert reason in result.reason


def test_a_template_changed_by_someone_else_fails_the_batch() -> None:
    result = batch(stable(), [pod("new222", "a"), pod("new222", "b")])
    assert result.failed and "runs registry.example.com/shop/checkout:1.0.0, not" in result.reason


# -- the plan and the split -------------------------------------------------------------------


def test_platform_replicas_is_the_count_the_batches_are_planned_for() -> None:
    platform = KubernetesPlatformSpec(kind="kubernetes", namespace="shop", deployment="checkout", replicas=4)
    assert platform.instances == 4
    assert (
        KubernetesPlatformSpec(kind="kubernetes", namespace="shop", deployment="checkout").instances is None
    )


def test_the_split_of_a_batch_is_the_ready_replica_ratio() -> None:
    status = WorkloadStatus(
        stable=TrackState("old", 3, 3), canary=TrackState("new", 2, 2), capacity=10, details={}
    )
    split = replica_split(status, 50)
    assert (split.canary, split.stable, split.exact, split.requested) == (40.0, 60.0, False, 50)
    assert replica_split(status, 40).exact
    assert json.dumps(split.to_dict())

"""The pure parts of the Kubernetes platform: the canary's objects, rollout readiness, route weights.

Every object opsdag generates is validated against the Kubernetes schemas
(``kubernetes-validate``, strict) and the HTTPRoute against the Gateway API CRD's OpenAPI
schema (v1.6.1, standard channel, vendored in tests/support). The CRD's CEL rules
(``x-kubernetes-validations``) are not evaluated: jsonschema does not know them.
"""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
from support.kube_controller import checkout_objects

from opsdag.platforms.base import PlatformError, Readiness
from opsdag.platforms.kubernetes import manifests as mf
from opsdag.platforms.kubernetes import readiness as rd
from opsdag.platforms.kubernetes.images import split_reference
from opsdag.platforms.routers.gateway_api import (
    ORIGINAL,
    REQUESTED,
    original_refs,
    split_of,
    stable_service_name,
    weighted_rules,
)

IMAGE = "registry.example.com/shop/checkout"
K8S = "1.33.0"
SCHEMA = Path(__file__).parents[1] / "support" / "gateway_api_httproute_v1.schema.json.gz"


def objects() -> dict[str, dict]:
    return checkout_objects("shop", f"{IMAGE}:1.0.0", 3)


def valid(obj: dict) -> None:
    assert kubernetes_validate.validate(obj, K8S, strict=True) == K8S.rsplit(".", 1)[0]


def valid_route(route: dict) -> None:
    schema = json.loads(gzip.decompress(SCHEMA.read_bytes()))["schema"]
    jsonschema.validate(route, schema)


# -- the canary's objects ------------------------------------------------------------------------


def test_the_canary_deployment_is_the_stable_one_with_the_new_image_and_its_own_track() -> None:
    stable = objects()["deployments"]
    canary = mf.canary_deployment(stable, image=f"{IMAGE}:1.1.0", replicas=2, container="app")
    valid(canary)
    assert canary["metadata"]["name"] == "checkout-canary"
    assert canary["metadata"]["annotations"][mf.CANARY_OF] == "checkout"
    assert canary["spec"]["replicas"] == 2
    assert canary["spec"]["selector"]["matchLabels"] == {"app": "checkout", "track": "canary"}
    labels = canary["spec"]["template"]["metadata"]["labels"]
    assert labels == {"app": "checkout", "track": "canary", "version": "1.1.0"}
    (container,) = canary["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{IMAGE}:1.1.0"
    assert (
        container["readinessProbe"] == stable["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    )
    assert stable == objects()["deployments"], "the stable Deployment is not touched"


def test_the_canary_service_selects_the_canary_pods_only() -> None:
    service = mf.canary_service(objects()["services"])
    valid(service)
    assert service["metadata"]["name"] == "checkout-canary"
    assert service["spec"]["selector"] == {"app": "checkout", "track": "canary"}
    assert service["spec"]["ports"] == objects()["services"]["spec"]["ports"]


def test_the_service_container_is_named_or_the_only_one() -> None:
    stable = objects()["deployments"]
    assert mf.image_of(stable, None) == f"{IMAGE}:1.0.0"
    two = copy.deepcopy(stable)
    two["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "envoy:1"})
    assert mf.image_of(two, "app") == f"{IMAGE}:1.0.0"
    with pytest.raises(PlatformError, match=r"has 2 containers \(app, sidecar\): set platform.container"):
        mf.image_of(two, None)
    with pytest.raises(
        PlatformError, match=r"has no container 'web' \(platform.container\); it has: app, sidecar"
    ):
        mf.image_of(two, "web")


def test_the_image_patch_replaces_one_image_and_is_guarded_by_the_resource_version() -> None:
    stable = objects()["deployments"]
    stable["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "envoy:1"})
    stable["metadata"]["resourceVersion"] = "42"
    patch = mf.image_patch(stable, "app", f"{IMAGE}:1.1.0")
    containers = patch["spec"]["template"]["spec"]["containers"]
    assert [c["image"] for c in containers] == [f"{IMAGE}:1.1.0", "envoy:1"]
    assert patch["metadata"] == {"resourceVersion": "42"}


@pytest.mark.parametrize(
    ("image", "label"),
    [
        (f"{IMAGE}:1.4.2", "1.4.2"),
        ("127.0.0.1:5000/shop/checkout:1.4.0-rc.1", "1.4.0-rc.1"),
        ("127.0.0.1:5000/shop/checkout", "latest"),
        (f"{IMAGE}@sha256:" + "0123456789abcdef" * 4, "sha256-0123456789ab"),
    ],
)
def test_version_labels(image: str, label: str) -> None:
    assert mf.version_label(image) == label


def test_a_stable_service_that_would_also_reach_the_canary_is_found() -> None:
    stable, service = objects()["deployments"], objects()["services"]
    labels = mf.canary_pod_labels(stable)
    assert not mf.selects_canary_pods(service, labels)  # it selects track: stable
    service["spec"]["selector"] = {"app": "checkout"}
    assert mf.selects_canary_pods(service, labels)


@pytest.mark.parametrize(
    ("image", "split"),
    [
        ("reg.example.com/shop/checkout:1.2", ("reg.example.com/shop/checkout", "1.2")),
        ("127.0.0.1:5000/shop/checkout", ("127.0.0.1:5000/shop/checkout", "latest")),
        ("127.0.0.1:5000/checkout@sha256:ab", ("127.0.0.1:5000/checkout", "sha256:ab")),
    ],
)
def test_image_references(image: str, split: tuple[str, str]) -> None:
    assert split_reference(image) == split


# -- rollout readiness ---------------------------------------------------------------------------


def deployment(desired: int = 3, generation: int = 2, **status: object) -> dict:
    return {
        "metadata": {"name": "checkout-canary", "namespace": "shop", "generation": generation},
        "spec": {
            "replicas": desired,
            "progressDeadlineSeconds": 600,
            "template": {"spec": {"containers": [{"name": "app", "image": f"{IMAGE}:1.1.0"}]}},
        },
        "status": {"observedGeneration": generation, **status},
    }


def pod(
    name: str, waiting: str | None = None, message: str = "", restarts: int = 0, tag: str = "1.1.0"
) -> dict:
    state = {"waiting": {"reason": waiting, "message": message}} if waiting else {"running": {}}
    return {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": f"{IMAGE}:{tag}"}]},
        "status": {
            "containerStatuses": [
                {"name": "app", "image": f"{IMAGE}:{tag}", "state": state, "restartCount": restarts}
            ]
        },
    }


CANARY = "Deployment shop/checkout-canary"
DONE = dict(replicas=3, updatedReplicas=3, readyReplicas=3, availableReplicas=3)


@pytest.mark.parametrize(
    ("dep", "pods", "expected"),
    [
        (
            deployment(**DONE),
            [pod("a")],
            Readiness(True, reason="Deployment shop/checkout-canary: 3 of 3 replicas updated and available"),
        ),
        (
            {
                **deployment(**DONE),
                "metadata": {"name": "checkout-canary", "namespace": "shop", "generation": 3},
            },
            [],
            Readiness(
                False, reason="Deployment shop/checkout-canary: the controller has not yet seen generation 3"
            ),
        ),
        (
            deployment(replicas=3, updatedReplicas=1, availableReplicas=1),
            [],
            Readiness(False, reason="Deployment shop/checkout-canary: 1 of 3 replicas updated"),
        ),
        (
            deployment(replicas=5, updatedReplicas=3, availableReplicas=5),
            [],
            Readiness(False, reason="Deployment shop/checkout-canary: 2 old replica(s) still running"),
        ),
        (
            deployment(replicas=3, updatedReplicas=3, availableReplicas=2),
            [],
            Readiness(False, reason="Deployment shop/checkout-canary: 2 of 3 replicas available"),
        ),
        (
            deployment(replicas=3, updatedReplicas=3),
            [pod("b"), pod("a", "CrashLoopBackOff", "back-off 10s restarting failed container", 4)],
            Readiness(
                False,
                failed=True,
                reason=f"{CANARY}: pod a, container app ({IMAGE}:1.1.0): CrashLoopBackOff: "
                "back-off 10s restarting failed container (restarted 4 time(s))",
            ),
        ),
        (
            deployment(replicas=3, updatedReplicas=3),
            [pod("a", "ImagePullBackOff", 'Back-off pulling image "x"')],
            Readiness(
                False,
                failed=True,
                reason=f"{CANARY}: pod a, container app ({IMAGE}:1.1.0): ImagePullBackOff: "
                'Back-off pulling image "x"',
            ),
        ),
        (
            deployment(replicas=3, updatedReplicas=3),
            [pod("a", "ErrImagePull")],
            Readiness(False, reason="Deployment shop/checkout-canary: 0 of 3 replicas available"),
        ),
        (
            deployment(
                replicas=3,
                updatedReplicas=3,
                conditions=[
                    {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": 'ReplicaSet "x" has timed out progressing.',
                    }
                ],
            ),
            [],
            Readiness(
                False,
                failed=True,
                reason=f"{CANARY}: ProgressDeadlineExceeded after 600 s: "
                'ReplicaSet "x" has timed out progressing.',
            ),
        ),
        (
            deployment(replicas=3, updatedReplicas=0),
            [pod("old", "CrashLoopBackOff", tag="1.0.9")],  # a replaced template's pod
            Readiness(False, reason=f"{CANARY}: 0 of 3 replicas updated"),
        ),
        (None, [], Readiness(False, failed=True, reason="no canary Deployment is running")),
    ],
    ids=[
        "done",
        "not-observed",
        "updating",
        "old-left",
        "unavailable",
        "crash-loop",
        "pull-back-off",
        "err-image-pull-waits",
        "deadline",
        "replaced-template-pod",
        "none",
    ],
)
def test_rollout_readiness(dep: dict | None, pods: list[dict], expected: Readiness) -> None:
    assert rd.rollout_readiness(dep, pods) == expected


def test_replica_counts_only_count_ready_pods_of_the_newest_template() -> None:
    assert rd.replica_counts(deployment(**DONE)) == (3, 3)
    assert rd.replica_counts(deployment(replicas=3, updatedReplicas=1, readyReplicas=3)) == (3, 1)
    stale = {**deployment(**DONE), "metadata": {"generation": 9}}
    assert rd.replica_counts(stale) == (3, 0)


# -- HTTPRoute weights ---------------------------------------------------------------------------


def test_route_weights_are_set_and_read_back_and_the_original_is_kept() -> None:
    route = objects()["httproutes"]
    valid_route(route)
    assert stable_service_name(route) == "checkout"
    assert split_of(route, "checkout").to_dict() == {
        "stable": 100.0,
        "canary": 0.0,
        "exact": True,
        "preview": False,
        "requested": 0,
    }
    for percent in (5, 25, 100):
        changed = copy.deepcopy(route)
        changed["spec"]["rules"] = weighted_rules(route, "checkout", percent)
        changed["metadata"]["annotations"] = {
            ORIGINAL: json.dumps(original_refs(route)),
            REQUESTED: str(percent),
        }
        valid_route(changed)
        assert changed["spec"]["rules"][0]["backendRefs"] == [
            {"name": "checkout", "port": 80, "weight": 100 - percent},
            {"name": "checkout-canary", "port": 80, "weight": percent},
        ]
        assert changed["spec"]["rules"][0]["matches"] == route["spec"]["rules"][0]["matches"]
        split = split_of(changed, "checkout")
        assert (split.stable, split.canary, split.exact, split.requested) == (
            100 - percent,
            percent,
            True,
            percent,
        )
        assert stable_service_name(changed) == "checkout"
        assert original_refs(changed) == original_refs(route)
        again = copy.deepcopy(changed)
        again["spec"]["rules"] = weighted_rules(changed, "checkout", 10)  # re-weighted from the original
        assert [r["weight"] for r in again["spec"]["rules"][0]["backendRefs"]] == [90, 10]


def test_a_route_to_several_services_is_refused() -> None:
    route = objects()["httproutes"]
    route["spec"]["rules"].append({"backendRefs": [{"name": "payments", "port": 80}]})
    with pytest.raises(PlatformError, match=r"exactly one Service; it refers to: checkout, payments"):
        stable_service_name(route)


def test_a_split_not_what_was_asked_is_not_exact() -> None:
    route = objects()["httproutes"]
    route["spec"]["rules"] = weighted_rules(route, "checkout", 30)
    route["metadata"]["annotations"] = {REQUESTED: "10"}  # someone edited the weights by hand
    split = split_of(route, "checkout")
    assert (split.canary, split.requested, split.exact) == (30.0, 10, False)


# -- the NGINX canary Ingress --------------------------------------------------------------------


def test_the_canary_ingress_copies_hosts_and_paths_to_the_canary_service() -> None:
    from opsdag.platforms.routers.nginx_ingress import CANARY, WEIGHT, canary_ingress, ingress_service_name
    from opsdag.platforms.routers.nginx_ingress import split_of as ingress_split

    ingress = objects()["ingresses"]
    valid(ingress)
    assert ingress_service_name(ingress) == "checkout"
    canary = canary_ingress(ingress, 15)
    valid(canary)
    assert canary["metadata"]["name"] == "checkout-canary"
    assert {k: canary["metadata"]["annotations"][k] for k in (CANARY, WEIGHT)} == {
        CANARY: "true",
        WEIGHT: "15",
    }
    assert canary["spec"]["ingressClassName"] == "nginx" and "tls" not in canary["spec"]
    path = canary["spec"]["rules"][0]["http"]["paths"][0]
    assert path["backend"]["service"] == {"name": "checkout-canary", "port": {"number": 80}}
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "checkout"
    split = ingress_split(canary)
    assert (split.stable, split.canary, split.exact, split.requested) == (85.0, 15.0, True, 15)
    assert ingress_split(None).to_dict() == {
        "stable": 100.0,
        "canary": 0.0,
        "exact": True,
        "preview": False,
        "requested": 0,
    }
    canary["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight-total"] = "1000"
    assert ingress_split(canary).canary == 1.5


def test_an_ingress_to_several_services_is_refused() -> None:
    from opsdag.platforms.routers.nginx_ingress import ingress_service_name

    ingress = objects()["ingresses"]
    ingress["spec"]["defaultBackend"] = {"service": {"name": "fallback", "port": {"number": 80}}}
    with pytest.raises(PlatformError, match=r"exactly one Service; it refers to: checkout, fallback"):
        ingress_service_name(ingress)


# -- pods and quotas -----------------------------------------------------------------------------


def test_capacity_comes_from_the_tightest_pod_quota_less_what_others_use() -> None:
    from opsdag.platforms.kubernetes.pods import NO_QUOTA_CAPACITY, capacity

    assert capacity([], ours=4) == (NO_QUOTA_CAPACITY, "no ResourceQuota limits pods in this namespace")
    quotas = [
        {"metadata": {"name": "cpu"}, "status": {"hard": {"cpu": "8"}, "used": {"cpu": "2"}}},
        {"metadata": {"name": "pods-team"}, "status": {"hard": {"pods": "20"}, "used": {"pods": "10"}}},
        {"metadata": {"name": "pods-ns"}, "status": {"hard": {"pods": "12"}, "used": {"pods": "10"}}},
    ]
    assert capacity(quotas, ours=4) == (6, "ResourceQuota pods-ns")  # 12 - (10 - 4) used by others


def test_metric_matchers_tell_the_tracks_apart_and_pin_the_canary_template() -> None:
    from opsdag.platforms.kubernetes.pods import metric_selectors

    loose = metric_selectors("shop", "checkout", [])
    assert loose == {
        "canary": 'namespace="shop", pod=~"checkout-canary-[a-z0-9]+-[a-z0-9]+"',
        "stable": 'namespace="shop", pod=~"checkout-[a-z0-9]+-[a-z0-9]+"',
    }
    pods = [{"metadata": {"labels": {"pod-template-hash": "7c9f8d6b5"}}}] * 2
    assert metric_selectors("shop", "checkout", pods)["canary"] == (
        'namespace="shop", pod=~"checkout-canary-7c9f8d6b5-[a-z0-9]+"'
    )


def test_endpoints_are_the_ready_pods_on_the_container_port() -> None:
    from opsdag.platforms.kubernetes.pods import endpoint_urls

    def pod(ip: str, ready: bool, deleting: bool = False) -> dict:
        meta = {"name": ip, **({"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {})}
        condition = {"type": "Ready", "status": "True" if ready else "False"}
        return {"metadata": meta, "status": {"podIP": ip, "conditions": [condition]}}

    pods = [pod("10.0.0.2", True), pod("10.0.0.1", True), pod("10.0.0.3", False), pod("10.0.0.4", True, True)]
    urls = endpoint_urls(objects()["deployments"], pods, "app")
    assert urls == ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]

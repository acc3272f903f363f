"""``checkout`` laid out for blue-green, as a team would apply it, in a ``KubeReleaseCluster``'s namespace.

``checkout-blue`` (the Deployment serving now), ``checkout-active`` (the Service users reach)
and ``checkout-preview`` (the Service a release's new colour is judged through), both
selecting ``opsdag.io/colour: blue``. Their pods are labelled ``app: checkout-bluegreen``,
not ``app: checkout``: the canary layout's objects live in the same namespace, and neither
layout's Services select the other's pods. ``BlueGreenObjects(cluster).reset()`` seeds them (first
time) and puts the namespace back to that: blue alone, ready, with both Services on it.
"""

from __future__ import annotations

import copy
from typing import Any

from support.waiting import wait_for

BASE = "checkout"
ACTIVE = "checkout-active"
PREVIEW = "checkout-preview"
COLOUR = "opsdag.io/colour"
APP = "checkout-bluegreen"  # the pods' app label
ROUTER = {"kind": "service-selector", "active_service": ACTIVE, "preview_service": PREVIEW}


def bluegreen_objects(namespace: str, image: str, replicas: int) -> dict[str, dict[str, Any]]:
    """The blue Deployment and the active and preview Services of ``checkout``."""
    pods = {"app": APP, COLOUR: "blue"}

    def service(name: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"app": APP},
            },
            "spec": {
                "selector": dict(pods),
                "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
            },
        }

    return {
        "blue": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "checkout-blue",
                "namespace": namespace,
                "labels": {"app": APP, COLOUR: "blue"},
            },
            "spec": {
                "replicas": replicas,
                "progressDeadlineSeconds": 600,
                "selector": {"matchLabels": dict(pods)},
                "template": {
                    "metadata": {"labels": dict(pods)},
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": image,
                                "ports": [{"name": "http", "containerPort": 8080}],
                                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                            }
                        ]
                    },
                },
            },
        },
        "active": service(ACTIVE),
        "preview": service(PREVIEW),
    }


class BlueGreenObjects:
    """The blue-green objects of ``checkout`` in ``cluster`` (a ``KubeReleaseCluster``)."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster

    def seeded(self, tag: str = "1.0.0", replicas: int | None = None) -> dict[str, dict[str, Any]]:
        replicas = self.cluster.replicas if replicas is None else replicas
        return bluegreen_objects(self.cluster.NAMESPACE, self.cluster.image(tag), replicas)

    def reset(self, tag: str = "1.0.0", replicas: int | None = None, timeout: float = 20) -> None:
        """Back to blue alone running ``tag``, ready, both Services on it, no green Deployment."""
        seed = self.seeded(tag, replicas)
        call = self.cluster.call
        for key, name in (("active", ACTIVE), ("preview", PREVIEW)):
            if self.cluster.get("services", name) is None:
                call("POST", "services", body=seed[key])
            else:
                call(
                    "PATCH", "services", name, {"metadata": {"annotations": None}, "spec": seed[key]["spec"]}
                )
        call("DELETE", "deployments", "checkout-green")
        blue = self.cluster.get("deployments", "checkout-blue")
        if blue is not None and not _as_seeded(blue, seed["blue"], images_too=False):
            call("DELETE", "deployments", "checkout-blue")  # a release made it: start from the seed
            blue = None
        if blue is None:
            call("POST", "deployments", body=seed["blue"])
        elif not _as_seeded(blue, seed["blue"], images_too=True):
            call("PATCH", "deployments", "checkout-blue", {"spec": seed["blue"]["spec"]})
        self.wait_settled(seed["blue"]["spec"]["replicas"], timeout)

    def wait_settled(self, replicas: int, timeout: float) -> None:
        def settled() -> bool:
            blue = self.cluster.get("deployments", "checkout-blue") or {}
            status = blue.get("status") or {}
            pods = (self.cluster.call("GET", "pods") or {}).get("items") or []
            colours = [(p["metadata"].get("labels") or {}).get(COLOUR) for p in pods]
            return (
                status.get("observedGeneration") == blue["metadata"].get("generation")
                and status.get("replicas") == status.get("readyReplicas") == status.get("updatedReplicas")
                and status.get("replicas") == replicas
                and colours.count("green") == 0
                and colours.count("blue") == replicas
            )

        wait_for(settled, timeout, 0.05, what=f"checkout-blue settled back to {replicas} ready pods")


def _as_seeded(found: dict[str, Any], seed: dict[str, Any], *, images_too: bool) -> bool:
    """Whether ``found`` is the seed (metadata labels, annotations, spec; images only if asked)."""
    spec, wanted = copy.deepcopy(found["spec"]), copy.deepcopy(seed["spec"])
    if not images_too:
        for item in (spec, wanted):
            item["replicas"] = 0
            for container in item["template"]["spec"]["containers"]:
                container["image"] = ""
    meta = found["metadata"]
    return meta.get("labels") == seed["metadata"]["labels"] and not meta.get("annotations") and spec == wanted


__all__ = ["ACTIVE", "PREVIEW", "ROUTER", "BlueGreenObjects", "bluegreen_objects"]

"""NGINX ingress canary annotations as a traffic router (``platform.router.kind: nginx``).

For legacy users of ingress-nginx (retired upstream: prefer ``gateway-api``). The service's
Ingress (``platform.router.ingress``, in ``platform.namespace``) sends its traffic to one
Service, the stable one, and is never changed. Above 0 %, a canary Ingress
``<ingress>-canary`` is a copy of its rules (same hosts and paths, same class) whose
backends are ``<service>-canary`` (created first), annotated
``nginx.ingress.kubernetes.io/canary: "true"`` and ``canary-weight: "<percent>"``; ingress-nginx
then sends that percent of the matching requests to it. At 0 % (an abort, the end of a
promote) the canary Ingress is deleted, then the canary Service.

``verify_weight`` reads the canary Ingress back: none is 0 %; its ``canary-weight`` out of
``canary-weight-total`` (default 100). No preview route (``can_preview = False``).
"""

from __future__ import annotations

import copy
from typing import Any

from opsdag.platforms.base import PlatformError, TrafficSplit
from opsdag.platforms.kubernetes import manifests as mf
from opsdag.platforms.kubernetes.routing import ServiceRouter

NGINX = "nginx.ingress.kubernetes.io/"
CANARY = NGINX + "canary"
WEIGHT = NGINX + "canary-weight"
WEIGHT_TOTAL = NGINX + "canary-weight-total"


def _backends(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every ``backend.service`` of an Ingress spec (the default backend and each path's)."""
    found = []
    if (spec.get("defaultBackend") or {}).get("service"):
        found.append(spec["defaultBackend"]["service"])
    for rule in spec.get("rules") or []:
        for path in (rule.get("http") or {}).get("paths") or []:
            if (path.get("backend") or {}).get("service"):
                found.append(path["backend"]["service"])
    return found


def ingress_service_name(ingress: dict[str, Any]) -> str:
    """The one Service the Ingress sends its traffic to."""
    names = {backend.get("name") for backend in _backends(ingress.get("spec") or {})}
    if len(names) != 1:
        meta = ingress.get("metadata", {})
        found = ", ".join(sorted(n for n in names if n)) or "none"
        raise PlatformError(
            f"Ingress {meta.get('namespace')}/{meta.get('name')} must send its traffic to exactly one "
            f"Service; it refers to: {found}"
        )
    return names.pop()


def canary_ingress(ingress: dict[str, Any], percent: int) -> dict[str, Any]:
    """``<ingress>-canary``: the Ingress's class and rules, to ``<service>-canary``, ``percent`` weighted."""
    meta = ingress["metadata"]
    stable = ingress_service_name(ingress)
    spec = copy.deepcopy({k: v for k, v in ingress["spec"].items() if k in ("ingressClassName", "rules")})
    for backend in _backends(spec):
        backend["name"] = mf.canary_name(stable)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": mf.canary_name(meta["name"]),
            "namespace": meta.get("namespace"),
            "labels": {**mf.MANAGED_BY, mf.TRACK_LABEL: "canary"},
            "annotations": {CANARY: "true", WEIGHT: str(percent), mf.CANARY_OF: meta["name"]},
        },
        "spec": spec,
    }


def split_of(canary: dict[str, Any] | None) -> TrafficSplit:
    """The split a canary Ingress (or none) puts in force."""
    if canary is None:
        return TrafficSplit(stable=100.0, canary=0.0, exact=True, requested=0)
    annotations = canary.get("metadata", {}).get("annotations") or {}
    if annotations.get(CANARY) != "true":
        return TrafficSplit(stable=100.0, canary=0.0, exact=False, requested=None)
    weight = int(annotations.get(WEIGHT, "0"))
    total = int(annotations.get(WEIGHT_TOTAL, "100"))
    share = round(100 * weight / total, 1) if total else 0.0
    return TrafficSplit(stable=round(100 - share, 1), canary=share, exact=True, requested=weight)


class NginxIngressRouter(ServiceRouter):
    """A canary Ingress beside the service's Ingress, weighted by ingress-nginx's annotations.

    :param namespace: ``platform.namespace``.
    :param ingress: ``platform.router.ingress``, the service's Ingress (never changed).
    :param deployment: ``platform.deployment``.
    :param container: ``platform.container``.
    :param connection_id: ``platform.connection_id``.
    """

    kind = "nginx"
    routed_field = "ingress"

    def __init__(self, *, ingress: str, **platform: Any) -> None:
        super().__init__(**platform)
        self.ingress = ingress

    def _ingress(self) -> dict[str, Any]:
        return self.routed_object("ingresses", self.ingress, "Ingress")

    def set_weight(self, percent: int) -> None:
        self.check_percent(percent)
        ingress = self._ingress()
        stable = ingress_service_name(ingress)
        service = self.services.stable_service(stable, f"Ingress {self.namespace}/{self.ingress}")
        name = mf.canary_name(self.ingress)
        if percent == 0:
            self.api.delete("ingresses", name)  # the route first, then the Service it routed to
            self.services.close_canary(stable)
            return
        self.services.open_canary(service, percent)
        wanted = canary_ingress(ingress, percent)
        current = self.api.create("ingresses", wanted)
        if current.get("metadata", {}).get("annotations", {}).get(WEIGHT) != str(percent) or (
            current.get("spec") != wanted["spec"]
        ):
            patch = {"metadata": {"annotations": wanted["metadata"]["annotations"]}, "spec": wanted["spec"]}
            self.api.merge_patch("ingresses", name, patch)

    def verify_weight(self) -> TrafficSplit:
        ingress = self._ingress()
        self.services.stable_service(
            ingress_service_name(ingress), f"Ingress {self.namespace}/{self.ingress}"
        )
        return split_of(self.api.get("ingresses", mf.canary_name(self.ingress)))

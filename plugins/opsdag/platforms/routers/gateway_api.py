"""Gateway API HTTPRoute backend weights as a traffic router (``platform.router.kind: gateway-api``).

The service's HTTPRoute (``platform.router.http_route``, in ``platform.namespace``) sends its
traffic to one Service, the stable one. Above 0 %, every rule that refers to it gets a
second backendRef, ``<service>-canary`` (a copy of the stable Service selecting the
canary's pods, created first), and the weights ``100 - percent`` / ``percent``; the percent
asked is kept in the annotation ``opsdag.io/canary-weight``, and the rules' original
backendRefs in ``opsdag.io/original-backend-refs``. At 0 % the original backendRefs are put
back exactly, the annotations dropped, and then the canary Service deleted: the route never
refers to a Service that does not exist. Every change is one merge patch of the route,
guarded by its ``resourceVersion`` (a concurrent change: re-read and recomputed).

``verify_weight`` reads the weights back from the route. Refused with a ``PlatformError``:
a route that refers to no Service or to several, and a stable Service whose selector also
matches the canary's pods (the split would not be the route's: give the stable pods and the
Service's selector ``track: stable``). No preview route (``can_preview = False``): the
strategy choice refuses blue-green for this router.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from opsdag.platforms.base import PlatformError, TrafficSplit
from opsdag.platforms.kubernetes import manifests as mf
from opsdag.platforms.kubernetes.routing import ServiceRouter
from opsdag.platforms.weights import split_is_exact

REQUESTED = "opsdag.io/canary-weight"
ORIGINAL = "opsdag.io/original-backend-refs"


def stable_service_name(route: dict[str, Any]) -> str:
    """The one Service the route's rules refer to, besides opsdag's canary Services."""
    names = {
        ref.get("name")
        for rule in route.get("spec", {}).get("rules") or []
        for ref in rule.get("backendRefs") or []
        if ref.get("kind", "Service") == "Service" and ref.get("group", "") in ("", "core")
    }
    names = {
        n for n in names if n and not (n.endswith(mf.CANARY_SUFFIX) and n[: -len(mf.CANARY_SUFFIX)] in names)
    }
    if len(names) != 1:
        found = ", ".join(sorted(names)) or "none"
        raise PlatformError(
            f"HTTPRoute {_name(route)} must send its traffic to exactly one Service; it refers to: {found}"
        )
    return names.pop()


def weighted_rules(route: dict[str, Any], stable: str, percent: int) -> list[dict[str, Any]]:
    """The route's rules with ``percent`` to ``<stable>-canary`` and the rest to ``stable`` (0 < percent)."""
    original = original_refs(route)
    rules = copy.deepcopy(route["spec"]["rules"])
    for rule, refs in zip(rules, original, strict=True):
        stable_refs = [r for r in refs if r.get("name") == stable]
        if not stable_refs:
            continue
        new_refs = [r for r in refs if r.get("name") != stable]
        base = stable_refs[0]
        new_refs.append({**base, "weight": 100 - percent})
        new_refs.append({**base, "name": mf.canary_name(stable), "weight": percent})
        rule["backendRefs"] = new_refs
    return rules


def original_refs(route: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Each rule's backendRefs before opsdag changed them (now, if it has not)."""
    saved = (route.get("metadata", {}).get("annotations") or {}).get(ORIGINAL)
    if saved:
        return json.loads(saved)
    return [copy.deepcopy(rule.get("backendRefs") or []) for rule in route["spec"].get("rules") or []]


def split_of(route: dict[str, Any], stable: str) -> TrafficSplit:
    """The split the route's weights put in force (the first rule that refers to ``stable``)."""
    canary = mf.canary_name(stable)
    requested_text = (route.get("metadata", {}).get("annotations") or {}).get(REQUESTED)
    for rule in route["spec"].get("rules") or []:
        refs = rule.get("backendRefs") or []
        if not any(r.get("name") == stable for r in refs):
            continue
        weights = {stable: 0, canary: 0}
        for ref in refs:
            if ref.get("name") in weights:
                weights[ref["name"]] += int(ref.get("weight", 1))
        total = weights[stable] + weights[canary]
        share = round(100 * weights[canary] / total, 1) if total else 0.0
        requested = int(requested_text) if requested_text else (0 if weights[canary] == 0 else None)
        exact = total > 0 and requested is not None and split_is_exact(share, requested)
        return TrafficSplit(
            stable=round(100 - share, 1) if total else 0.0, canary=share, exact=exact, requested=requested
        )
    raise PlatformError(f"HTTPRoute {_name(route)} has no rule that refers to Service {stable}")


class GatewayApiRouter(ServiceRouter):
    """An HTTPRoute's backendRef weights between the stable Service and ``<service>-canary``.

    :param namespace: ``platform.namespace`` (the route, both Services and Deployments).
    :param http_route: ``platform.router.http_route``.
    :param deployment: ``platform.deployment`` (whose canary is checked before it gets traffic).
    :param container: ``platform.container``.
    :param connection_id: ``platform.connection_id``.
    """

    kind = "gateway-api"
    routed_field = "http_route"

    def __init__(self, *, http_route: str, **platform: Any) -> None:
        super().__init__(**platform)
        self.http_route = http_route

    def _route(self) -> dict[str, Any]:
        return self.routed_object("httproutes", self.http_route, "HTTPRoute")

    def _stable_service(self, route: dict[str, Any]) -> dict[str, Any]:
        return self.services.stable_service(stable_service_name(route), f"HTTPRoute {_name(route)}")

    def set_weight(self, percent: int) -> None:
        self.check_percent(percent)
        route = self._route()
        service = self._stable_service(route)
        stable = service["metadata"]["name"]
        if percent > 0:
            self.services.open_canary(service, percent)  # its Service exists before the route refers to it

        def change(current: dict[str, Any]) -> dict[str, Any] | None:
            annotations = current.get("metadata", {}).get("annotations") or {}
            meta: dict[str, Any] = {"resourceVersion": current["metadata"].get("resourceVersion")}
            if percent == 0:
                if ORIGINAL not in annotations:
                    return None  # never changed by opsdag, or already restored
                rules = copy.deepcopy(current["spec"]["rules"])
                for rule, refs in zip(rules, json.loads(annotations[ORIGINAL]), strict=True):
                    rule["backendRefs"] = refs
                others = {k for k in annotations if k not in (ORIGINAL, REQUESTED)}
                # no annotation left: none at all (as the API server stores an empty map)
                meta["annotations"] = {ORIGINAL: None, REQUESTED: None} if others else None
            else:
                rules = weighted_rules(current, stable, percent)
                if rules == current["spec"]["rules"] and annotations.get(REQUESTED) == str(percent):
                    return None
                meta["annotations"] = {ORIGINAL: json.dumps(original_refs(current)), REQUESTED: str(percent)}
            if meta["resourceVersion"] is None:
                del meta["resourceVersion"]
            return {"metadata": meta, "spec": {"rules": rules}}

        self.api.update("httproutes", self.http_route, change, current=route)
        if percent == 0:
            self.services.close_canary(stable)

    def verify_weight(self) -> TrafficSplit:
        route = self._route()
        return split_of(route, self._stable_service(route)["metadata"]["name"])


def _name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{meta.get('namespace', '?')}/{meta.get('name', '?')}"

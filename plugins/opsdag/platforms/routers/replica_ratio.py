"""The ratio of canary to stable replicas as a traffic router (``platform.router.kind: replica-ratio``).

For clusters without a traffic manager. One Service (``platform.router.service``, default
the one named like ``platform.deployment``) selects the pods of both Deployments (no
``track`` in its selector), so each ready pod takes an even part of the requests: the
canary's share is its ready pods over all the ready pods behind that Service.

The rounding rule (``weights.ratio_replicas``): the stable Deployment keeps its replicas
(it is the team's, and what serves if the release is undone), and a weight sets the canary
Deployment to the smallest count, from 1, whose share is nearest to it: 25 % beside 6
stable replicas is 2 (2 of 8 = 25 %), 10 % beside 4 is 1 (1 of 5 = 20 %, the nearest a
whole replica gets). Scaling the stable down instead would take capacity from the version
that must carry everything after an abort, and a fixed total (the spec's former
``replicas``) cannot give the issue's 2 of 8 beside 6. Capped by
``platform.router.max_canary_replicas`` and the namespace's pod quota: 100 % is out of a
ratio's reach while a stable replica serves (the driver never scales it below 1), so it
gives the canary that many, and ``verify_weight`` says the share they get.

At 0 % (the abort, which always works) the canary Deployment is scaled to 0 replicas and
kept (the driver removes it); no canary: nothing to do; the Service is not read. A canary
found failed goes to 0 with its failing pods, so why is kept in ``opsdag.io/failed`` (with
its image): no later weight sends traffic to that image again. The percent asked is kept
in the canary's annotation ``opsdag.io/canary-weight``; every change is one merge patch of
the canary's replicas and annotations, guarded by its ``resourceVersion``. A change is in
force once the canary's pods taking traffic are the count it set (``settled_split``), seconds
later (``settles_later``): ``set_weight`` waits for that in its thread, up to ``settle_timeout``
(the abort, the driver's calls); a release's stage makes it with ``start_weight`` and waits
deferred on ``weight_settled_async`` (the driver's async API). Above 0 % refused: no canary, a
failed one, a Service selecting only one track's pods. A canary started by the driver takes
its replicas' share at once (``requested`` None until a weight is asked). No preview route.
"""

from __future__ import annotations

import json
import time
from typing import Any

from opsdag.platforms.base import CANARY, PlatformError, Readiness, TrafficSplit
from opsdag.platforms.kubernetes import manifests as mf
from opsdag.platforms.kubernetes import pods as pf
from opsdag.platforms.kubernetes import readiness as rd
from opsdag.platforms.kubernetes.driver import KubernetesDriver
from opsdag.platforms.kubernetes.routing import ServiceRouter
from opsdag.platforms.weights import ratio_replicas, split_is_exact

REQUESTED = "opsdag.io/canary-weight"
# Why a canary found failed was scaled to 0 (its failing pods go with it), for its image:
FAILED = "opsdag.io/failed"


def recorded_failure(canary: dict[str, Any], container: str | None) -> str | None:
    """Why the canary's image was found failed before it was scaled to 0 (None: it was not)."""
    text = (canary["metadata"].get("annotations") or {}).get(FAILED)
    if not text:
        return None
    recorded = json.loads(text)
    return recorded["reason"] if recorded.get("image") == mf.image_of(canary, container) else None


def takes_traffic(pod: dict[str, Any]) -> bool:
    """Whether a Service sends requests to the pod: Ready, with an IP, not being deleted."""
    status = pod.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    return ready and bool(status.get("podIP")) and not pod["metadata"].get("deletionTimestamp")


def ready_counts(pods: list[dict[str, Any]], canary_selector: dict[str, str] | None) -> tuple[int, int]:
    """``(canary, stable)`` pods taking traffic among a Service's pods (canary: its Deployment's selector)."""
    takers = [p for p in pods if takes_traffic(p)]
    canary = sum(
        1
        for p in takers
        if canary_selector and mf.matches(canary_selector, p["metadata"].get("labels") or {})
    )
    return canary, len(takers) - canary


def settled_split(canary: dict[str, Any] | None, pods: list[dict[str, Any]]) -> Readiness:
    """Whether the canary's pods taking traffic are the count its replicas ask (the split set is
    in force); failed for good when one of its pods will not start (or it is known unpullable,
    or past its progress deadline) while it should have some. ``pods``: the canary's."""
    if canary is None:
        return Readiness(True, reason="no canary Deployment: the stable takes everything")
    meta = canary["metadata"]
    name = f"Deployment {meta.get('namespace', '?')}/{meta.get('name', '?')}"
    desired = int(canary["spec"].get("replicas", 1))
    taking = sum(1 for p in pods if takes_traffic(p))
    counted = int((canary.get("status") or {}).get("replicas") or 0)
    seen = f"{name}: {taking} of {desired} pod(s) take traffic"
    if rd.observed(canary) and rd.replica_counts(canary)[1] == counted == taking == desired:
        return Readiness(True, reason=seen)
    unpullable = (meta.get("annotations") or {}).get(rd.UNPULLABLE)
    failed = (unpullable or rd.failure(canary, pods)) if desired else None
    if failed:
        return Readiness(False, failed=True, reason=f"{name}: {failed}")
    return Readiness(False, reason=seen if rd.observed(canary) else f"{seen} (new spec not yet seen)")


def split_of(canary: int, stable: int, requested: int | None) -> TrafficSplit:
    """The split ``canary`` and ``stable`` ready pods put in force, against the percent asked."""
    total = canary + stable
    share = round(100 * canary / total, 1) if total else 0.0
    exact = total > 0 and requested is not None and split_is_exact(share, requested)
    return TrafficSplit(
        stable=round(100 - share, 1) if total else 0.0, canary=share, exact=exact, requested=requested
    )


class ReplicaRatioRouter(ServiceRouter):
    """The canary Deployment's replica count beside the stable one's, behind one shared Service.

    :param namespace: ``platform.namespace``.
    :param deployment: ``platform.deployment``, the stable Deployment (never scaled here).
    :param service: ``platform.router.service`` (None: the Service named like the Deployment).
    :param max_canary_replicas: ``platform.router.max_canary_replicas``.
    :param container: ``platform.container``.
    :param connection_id: ``platform.connection_id``.
    :param settle_timeout: seconds ``set_weight`` waits for the canary's pods to take traffic.
    :param poll_interval: the longest pause between two reads while waiting (first 0.05 s, doubled).
    """

    kind = "replica-ratio"
    exact_split = False
    settles_later = True
    routed_field = "service"

    def __init__(
        self,
        *,
        service: str | None = None,
        max_canary_replicas: int = 10,
        settle_timeout: float = 120.0,
        poll_interval: float = 0.5,
        **platform: Any,
    ) -> None:
        super().__init__(**platform)
        self.service = service or self.deployment
        self.max_canary_replicas = max_canary_replicas
        self.settle_timeout = settle_timeout
        self.poll_interval = poll_interval

    @property
    def driver(self) -> KubernetesDriver:
        """The Deployments' reader (scaling goes through this router's own patches)."""
        return self.services.driver

    def set_weight(self, percent: int) -> None:
        """``start_weight``, then wait here until it is in force (or failed, or ``settle_timeout``
        passed: ``verify_weight`` then says the share the canary really gets)."""
        self.start_weight(percent)
        deadline = time.monotonic() + self.settle_timeout
        delay = min(0.05, self.poll_interval)
        while True:
            settled = self.weight_settled()
            if settled.ready or settled.failed or time.monotonic() > deadline:
                return
            time.sleep(delay)
            delay = min(delay * 2, self.poll_interval)

    def start_weight(self, percent: int) -> None:
        self.check_percent(percent)
        if percent == 0:
            if (canary := self.driver.canary_deployment()) is not None:
                failed = self.driver.canary_failure(canary) if canary["spec"].get("replicas") else None
                self._scale_canary(canary, 0, 0, failed)
            return
        stable = self.driver.stable_deployment()
        self._shared_service(stable)
        canary = self._running_canary(percent)
        replicas = ratio_replicas(percent, int(stable["spec"].get("replicas", 1)), self._most(stable, canary))
        self._scale_canary(canary, replicas, percent)

    def weight_settled(self) -> Readiness:
        canary = self.driver.canary_deployment()
        return settled_split(canary, self.driver.pods(canary, CANARY) if canary else [])

    async def weight_settled_async(self) -> Readiness:
        """``weight_settled`` read through the driver's ``AsyncKubeApi``: no thread in the triggerer."""
        canary = await self.driver.async_api.get("deployments", self.driver.canary_name)
        return settled_split(canary, await self.driver.pods_async(canary, CANARY) if canary else [])

    def verify_weight(self) -> TrafficSplit:
        service = self.routed_object("services", self.service, "Service in front of both tracks")
        selector = service.get("spec", {}).get("selector") or {}
        canary = self.driver.canary_deployment()
        if canary is None:
            requested: int | None = 0
            canary_selector = None
        else:
            text = (canary["metadata"].get("annotations") or {}).get(REQUESTED)
            requested = int(text) if text else None
            canary_selector = canary["spec"].get("selector", {}).get("matchLabels") or {}
        pods = self.api.list("pods", selector) if selector else []
        return split_of(*ready_counts(pods, canary_selector), requested)

    # -- helpers -----------------------------------------------------------------------------

    def _shared_service(self, stable: dict[str, Any]) -> dict[str, Any]:
        """The Service; refused unless its selector matches both the stable and the canary pods."""
        service = self.routed_object("services", self.service, "Service in front of both tracks")
        selector = service.get("spec", {}).get("selector") or {}
        stable_labels = stable["spec"].get("template", {}).get("metadata", {}).get("labels") or {}
        missing = [
            track
            for track, labels in (("stable", stable_labels), ("canary", mf.canary_pod_labels(stable)))
            if not selector or not mf.matches(selector, labels)
        ]
        if missing:
            shown = mf.selector_string(selector) or "nothing (no selector)"
            raise PlatformError(
                f"Service {self.namespace}/{self.service} (platform.router.service) selects {shown}, which "
                f"the {' and '.join(missing)} pods do not carry: a replica ratio needs one Service selecting "
                "both tracks' pods (no track or version in its selector)"
            )
        return service

    def _running_canary(self, percent: int) -> dict[str, Any]:
        canary = self.driver.canary_deployment()
        if canary is None:
            raise PlatformError(
                f"no canary Deployment {self.driver.canary_name} runs: it cannot take {percent} %"
            )
        failed = self.driver.canary_failure(canary) or recorded_failure(canary, self.container)
        if failed:
            raise PlatformError(f"the canary failed, it gets no traffic: {failed}")
        return canary

    def _most(self, stable: dict[str, Any], canary: dict[str, Any]) -> int:
        """The most canary replicas: the spec's cap, and the pod quota's room beside the stable."""
        ours = sum(int((d.get("status") or {}).get("replicas") or 0) for d in (stable, canary))
        capacity, _ = pf.capacity(self.api.list("resourcequotas"), ours)
        room = capacity - int(stable["spec"].get("replicas", 1))
        return max(1, min(self.max_canary_replicas, room))

    def _scale_canary(
        self, canary: dict[str, Any], replicas: int, percent: int, failed: str | None = None
    ) -> None:
        """One merge patch of the canary's replicas and requested percent (none if both are set;
        ``failed``: why it is scaled down, kept), guarded by its ``resourceVersion``. No wait.
        Its replicas only when they change: an annotation alone leaves the generation, so a
        split already in force is read settled at once."""

        def change(current: dict[str, Any]) -> dict[str, Any] | None:
            annotations = current["metadata"].get("annotations") or {}
            scaled = int(current["spec"].get("replicas", 1)) == replicas
            if scaled and annotations.get(REQUESTED) == str(percent):
                return None
            meta: dict[str, Any] = {"annotations": {REQUESTED: str(percent)}}
            if failed:
                image = mf.image_of(current, self.container)
                meta["annotations"][FAILED] = json.dumps({"image": image, "reason": failed})
            if current["metadata"].get("resourceVersion"):
                meta["resourceVersion"] = current["metadata"]["resourceVersion"]
            return {"metadata": meta} if scaled else {"metadata": meta, "spec": {"replicas": replicas}}

        self.api.update("deployments", self.driver.canary_name, change, current=canary)

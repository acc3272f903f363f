"""The Kubernetes driver's promotion in steps, so the stable Deployment's rollout is waited for deferred.

``promote_start`` sends all traffic to the ready canary, records on the canary (annotation
``PROMOTED_FROM``) the image and ``version`` label the stable Deployment ran and when the
promotion started, then patches the stable Deployment's image (and its pods' ``version``
label, if they carry one) to the canary's. ``promote_readiness`` reads that rollout as
``kubectl rollout status`` does; ``promote_timeout`` counts from the recorded start, so a
retried task or a restarted triggerer keeps the first deadline. ``promote_finish`` routes
everything back to the stable Service, now the new version, and deletes the canary;
``promote_revert`` puts the recorded image back (the canary still serves) and drops the record.

With no canary and a rolling release in place under way, the same steps let that rollout
finish (``InPlaceRolling.promote_roll_*``). Everything is on the cluster: each step, in any
process, finds where the promotion is.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from opsdag.platforms.base import CANARY, STABLE, PlatformError, Readiness
from opsdag.platforms.kubernetes import manifests as mf
from opsdag.platforms.kubernetes import readiness as rd
from opsdag.platforms.kubernetes import replicasets as rs
from opsdag.platforms.kubernetes.rolling import promoting_since

if TYPE_CHECKING:
    from opsdag.platforms.kubernetes.driver import KubernetesDriver

PROMOTED_FROM = "opsdag.io/promoted-from"  # on a canary being promoted: the stable's image, the start


class StepwisePromotion:
    """``promote`` and its steps for ``KubernetesDriver`` (a mixin); see the module docstring."""

    def promote(self: KubernetesDriver) -> None:
        self.promote_by_steps(self.poll_interval)

    def promote_start(self: KubernetesDriver) -> str | None:
        canary = self.canary_deployment()
        if canary is None:
            rolling = self.rolling_deployment()
            return None if rolling is None else self.promote_roll_start(rolling)
        ready = rd.rollout_readiness(canary, self.pods(canary, CANARY))
        if not ready.ready:
            raise PlatformError(f"cannot promote a canary that is not ready: {ready.reason}")
        image = mf.image_of(canary, self.container)
        if self.router is not None:
            self.router.set_weight(100)  # the ready canary serves while the stable Deployment rolls
        record = promoted_from(canary)
        if record is None:
            stable = self.stable_deployment()
            labels = stable["spec"]["template"].get("metadata", {}).get("labels") or {}
            record = {
                "image": mf.image_of(stable, self.container),
                "version": labels.get(mf.VERSION_LABEL),
                "since": time.time(),
            }
            annotations = {PROMOTED_FROM: json.dumps(record, sort_keys=True)}
            self.api.merge_patch("deployments", self.canary_name, {"metadata": {"annotations": annotations}})
        self.api.update("deployments", self.deployment, self._template_change(image, mf.version_label(image)))
        return (
            f"Deployment {self.namespace}/{self.deployment} rolls from {record['image']} to {image}; "
            "the canary serves meanwhile"
        )

    def promote_readiness(self: KubernetesDriver) -> Readiness:
        canary = self.canary_deployment()
        stable = self.stable_deployment()
        return promotion_readiness(
            canary, stable, self.pods(stable, STABLE), self.canary_name, self.promote_timeout, time.time()
        )

    def promote_finish(self: KubernetesDriver) -> None:
        canary = self.canary_deployment()
        if canary is None:
            if self.rolling_deployment() is not None:
                self.promote_roll_finish()
            return
        if promoted_from(canary) is None:
            raise PlatformError(f"{self.canary_name} is not being promoted (promote_start first)")
        if self.router is not None:
            self.router.set_weight(0)  # everything back to the stable Service, now the new version
        self.api.delete("deployments", self.canary_name)

    def promote_revert(self: KubernetesDriver, reason: str) -> None:
        canary = self.canary_deployment()
        if canary is None:
            if (rolling := self.rolling_deployment()) is not None:
                self.promote_roll_revert(rolling, reason)
            raise PlatformError(f"promotion failed: {reason}; no canary or rolling release was left to undo")
        record = promoted_from(canary)
        if record is None:
            raise PlatformError(f"promotion failed: {reason}; the stable Deployment was not changed")
        self.api.update(
            "deployments", self.deployment, self._template_change(record["image"], record.get("version"))
        )
        # Back to before promote_start (the traffic aside): a new promotion starts a new clock.
        self.api.merge_patch(
            "deployments", self.canary_name, {"metadata": {"annotations": {PROMOTED_FROM: None}}}
        )
        raise PlatformError(
            f"the stable Deployment {self.deployment} did not roll to {mf.image_of(canary, self.container)}: "
            f"{reason}; its image is back to {record['image']} (the canary still serves)"
        )

    def _template_change(self: KubernetesDriver, image: str, version: str | None) -> Any:
        """An ``api.update`` change: the stable pods run ``image`` (and ``version``, if labelled so)."""

        def change(stable: dict[str, Any]) -> dict[str, Any] | None:
            labels = stable["spec"]["template"].get("metadata", {}).get("labels") or {}
            stale_label = (
                mf.VERSION_LABEL in labels and version is not None and labels[mf.VERSION_LABEL] != version
            )
            if mf.image_of(stable, self.container) == image and not stale_label:
                return None
            patch = mf.image_patch(stable, self.container, image)
            if stale_label:
                patch["spec"]["template"]["metadata"] = {"labels": {mf.VERSION_LABEL: version}}
            return patch

        return change


def promotion_readiness(
    canary: dict[str, Any] | None,
    stable: dict[str, Any],
    stable_pods: list[dict[str, Any]],
    canary_name: str,
    timeout: float,
    now: float,
) -> Readiness:
    """Whether the stable Deployment's rollout ``promote_start`` began is done (pure: the driver's
    sync and async reads both decide here). ``timeout`` counts from the start recorded on the
    canary, or on the stable Deployment for a rolling release in place."""
    if canary is not None:
        record = promoted_from(canary)
        if record is None:
            return Readiness(False, failed=True, reason=f"no promotion of {canary_name} was started")
        since = float(record.get("since") or now)
    elif rs.recorded(stable) is not None:
        since = promoting_since(stable, now)
    else:
        return Readiness(True, reason="promoted: no canary and no rolling release is left")
    result = rd.rollout_readiness(stable, stable_pods)
    if result.ready or scaled_to_zero(stable):
        return Readiness(True, reason=result.reason)
    if not result.failed and now - since > timeout:
        why = f"not settled {timeout:.0f} s after the promotion started: {result.reason}"
        return Readiness(False, failed=True, reason=why)
    return result


def promoted_from(canary: dict[str, Any]) -> dict[str, Any] | None:
    """The record ``promote_start`` left on the canary (None: its promotion has not started)."""
    raw = (canary["metadata"].get("annotations") or {}).get(PROMOTED_FROM)
    return json.loads(raw) if raw else None


def scaled_to_zero(deployment: dict[str, Any]) -> bool:
    """A Deployment at 0 replicas with no pod left: settled, though no replica is ready."""
    status = deployment.get("status") or {}
    return (
        int(deployment["spec"].get("replicas", 1)) == 0
        and rd.observed(deployment)
        and not status.get("replicas")
    )

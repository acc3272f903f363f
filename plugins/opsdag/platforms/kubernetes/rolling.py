"""Rolling releases of the stable Deployment itself: the Kubernetes driver's ``roll``, ``undo_roll``.

Kubernetes rolls a Deployment by itself; opsdag only decides where it holds. A batch sets
the pod template's image and ``spec.strategy.rollingUpdate`` to the service's ``max_surge``
and ``max_unavailable`` (``rolling`` in the spec) and unpauses the Deployment. With those
the controller creates ``max_surge + max_unavailable`` more new pods (the planned batch,
``weights.rolling_plan``) and then cannot go on before they are available: it halts by
itself at the batch's count. ``roll`` waits the controller's reaction (well under a
second: no pod has to start) until the new ReplicaSet has the batch's replicas and pauses
the Deployment there (``spec.paused``), before the new pods are available, so the
controller leaves the batch as it is while it is judged; the next batch unpauses it
again. The pods becoming ready is waited for in the triggerer (``roll_readiness``, from
``RolloutStatusTrigger``). A paused Deployment has no progress deadline in Kubernetes: the
driver counts ``spec.progressDeadlineSeconds`` itself from the batch's start.

Tracks: the new ReplicaSet (the current template's ``pod-template-hash``) is the canary,
the older ones are stable; ``metric_selectors`` name their pods. The Service selects
both, so the split is the ratio of ready pods, whatever the router: a router is never
asked for a weight during a rolling release in place.

Undo is ``kubectl rollout undo``: the pod template of the revision that served before
the release (recorded by the first batch on the Deployment, ``replicasets.ROLLING_FROM``,
and checked against preflight's rollback target) is copied from its ReplicaSet (minus
``pod-template-hash``) into the Deployment, with the strategy and ``paused`` as they were
and the record dropped: the Deployment's spec, labels and annotations are exactly as
before; what the controller owns (``status``, ``generation``, ``resourceVersion``, the
``deployment.kubernetes.io/revision`` it bumps when it reuses the old ReplicaSet) differs.
Promote puts the strategy and ``paused`` back and stamps the record with its start
(``promote_roll_start``); once the rollout is complete (waited for deferred, through the
driver's ``promote_readiness``) it drops the record; a failed one is undone as ``abort_roll``.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from opsdag.platforms.base import PlatformError, Readiness, RollbackTarget, TrackState
from opsdag.platforms.kubernetes import manifests as mf
from opsdag.platforms.kubernetes import pods as pf
from opsdag.platforms.kubernetes import readiness as rd
from opsdag.platforms.kubernetes import replicasets as rs

if TYPE_CHECKING:
    from opsdag.platforms.kubernetes.driver import KubernetesDriver

SIZE_POLL = 0.05  # seconds between two reads while the controller sizes a batch
PROMOTING_SINCE = "promoting_since"  # in the record: when promote_roll_start let the rollout finish


class InPlaceRolling:
    """The Kubernetes driver's rolling release in place (a mixin of ``KubernetesDriver``)."""

    rolls_in_place = True

    def rolling_deployment(self: KubernetesDriver) -> dict[str, Any] | None:
        """The stable Deployment when a rolling release in place is under way (its record), else None."""
        if self.canary_deployment() is not None:
            return None
        deployment = self.stable_deployment()
        return deployment if rs.recorded(deployment) is not None else None

    def check_planned_replicas(self: KubernetesDriver, deployment: dict[str, Any]) -> None:
        """Refuse (before any change) a Deployment whose replicas differ from ``platform.replicas``."""
        planned = getattr(getattr(self.spec, "platform", None), "replicas", None)
        replicas = int(deployment["spec"].get("replicas", 1))
        if planned is not None and planned != replicas:
            raise PlatformError(
                f"platform.replicas is {planned} but Deployment {self.namespace}/{self.deployment} runs "
                f"spec.replicas {replicas}: the rolling batches were planned for {planned}; set "
                f"platform.replicas to {replicas} (or scale the Deployment)"
            )

    def replica_sets(self: KubernetesDriver, deployment: dict[str, Any]) -> list[dict[str, Any]]:
        """The Deployment's ReplicaSets, oldest revision first."""
        return rs.owned(deployment, self.api.list("replicasets", rd.match_labels(deployment)))

    def _all_pods(self: KubernetesDriver, deployment: dict[str, Any]) -> list[dict[str, Any]]:
        return self.api.list("pods", rd.match_labels(deployment))

    def _steps(self: KubernetesDriver) -> tuple[int, int]:
        rolling = getattr(self.spec, "rolling", None)
        return (rolling.max_surge, rolling.max_unavailable) if rolling is not None else (1, 0)

    def roll(self: KubernetesDriver, image: str, updated: int, total: int | None) -> None:
        deployment = self.stable_deployment()
        name = f"Deployment {self.namespace}/{self.deployment}"
        replicas = int(deployment["spec"].get("replicas", 1))
        if total is None:
            raise PlatformError(
                f"platform.replicas is not set: a rolling release plans its batches for it; set it to "
                f"{replicas}, the spec.replicas of {name}"
            )
        if total != replicas:
            raise PlatformError(
                f"platform.replicas is {total} but {name} runs spec.replicas {replicas}: the rolling batches "
                f"were planned for {total}; set platform.replicas to {replicas} (or scale the Deployment)"
            )
        if not 1 <= updated <= total:
            raise PlatformError(f"a batch updates 1 to {total} replicas, {updated} asked")
        if rs.recorded(deployment) is None:  # nothing changed yet: refuse an image that cannot run
            resolution = self.resolve_image(image)
            if not resolution.pullable:
                raise PlatformError(f"{image} cannot run here: {resolution.reason}; {name} is unchanged")
        if self._holds_batch(deployment, image, updated):
            return
        surge, unavailable = self._steps()
        self.api.update(
            "deployments",
            self.deployment,
            lambda d: rs.roll_patch(d, image, self.container, surge, unavailable),
            current=deployment,
        )
        deadline = time.monotonic() + self.settle_timeout
        while not self._batch_sized(deployment := self.stable_deployment(), updated):
            if time.monotonic() > deadline:
                raise PlatformError(
                    f"{name}: the controller did not start a batch of {updated} new replica(s) within "
                    f"{self.settle_timeout:.0f} s (is the Deployment controller running?)"
                )
            time.sleep(SIZE_POLL)
        self.api.update(
            "deployments",
            self.deployment,
            lambda d: None if d["spec"].get("paused") else rs.pause_patch(d),
            current=deployment,
        )

    def _batch_sized(self: KubernetesDriver, deployment: dict[str, Any], updated: int) -> bool:
        new, _ = rs.split_replica_sets(deployment, self.replica_sets(deployment))
        return new is not None and int(new["spec"].get("replicas") or 0) >= updated

    def _holds_batch(self: KubernetesDriver, deployment: dict[str, Any], image: str, updated: int) -> bool:
        return (
            rs.recorded(deployment) is not None
            and bool(deployment["spec"].get("paused"))
            and mf.image_of(deployment, self.container) == image
            and self._batch_sized(deployment, updated)
        )

    def roll_readiness(self: KubernetesDriver, image: str, updated: int, since: float) -> Readiness:
        deployment = self.stable_deployment()
        return rs.batch_readiness(
            deployment,
            self.replica_sets(deployment),
            self._all_pods(deployment),
            image=image,
            container=self.container,
            updated=updated,
            since=since,
            now=time.time(),
        )

    def undo_roll(self: KubernetesDriver, target: RollbackTarget) -> None:
        deployment = self.stable_deployment()
        record = rs.recorded(deployment)
        name = f"Deployment {self.namespace}/{self.deployment}"
        if record is None:
            running = mf.image_of(deployment, self.container)
            if running != target.image:
                raise PlatformError(
                    f"{name} runs {running}, not {target.image} (the rollback target), and carries no "
                    f"record of a rolling release ({rs.ROLLING_FROM}) to undo: set its image back by hand"
                )
        else:
            template = rs.previous_template(deployment, self.replica_sets(deployment), record)
            restored = mf.image_of({"spec": {"template": template}}, self.container)
            if restored != target.image:
                raise PlatformError(
                    f"{name}: revision {record.get('revision')}, which served before the release, runs "
                    f"{restored}, but preflight recorded {target.image}: not undone, check the Deployment"
                )
            self._restore(deployment, template)
        self._wait_settled(self.deployment, "stable", self.promote_timeout, must=True)

    def abort_roll(self: KubernetesDriver) -> str | None:
        """The undo's one change (the recorded revision's template back, unpaused), not waited for."""
        deployment = self.rolling_deployment()
        if deployment is None:
            return None
        record = rs.recorded(deployment) or {}
        template = rs.previous_template(deployment, self.replica_sets(deployment), record)
        self._restore(deployment, template)
        image = mf.image_of({"spec": {"template": template}}, self.container)
        return (
            f"Deployment {self.namespace}/{self.deployment} set back to revision {record.get('revision')} "
            f"({image}) and unpaused: its pods replace the new ones"
        )

    def _restore(self: KubernetesDriver, deployment: dict[str, Any], template: dict[str, Any]) -> None:
        def change(current: dict[str, Any]) -> dict[str, Any] | None:
            now = rs.recorded(current)
            return None if now is None else rs.restore_patch(current, now, template)

        self.api.update("deployments", self.deployment, change, current=deployment)

    def promote_roll_start(self: KubernetesDriver, deployment: dict[str, Any]) -> str:
        """Let the rolling release finish: strategy and ``paused`` back, the record kept with the
        promotion's start (``PROMOTING_SINCE``) until ``promote_roll_finish`` drops it."""

        def change(current: dict[str, Any]) -> dict[str, Any] | None:
            record = rs.recorded(current)
            if record is None:
                return None
            patch = rs.restore_patch(current, record, None, drop_record=False)
            if PROMOTING_SINCE not in record:
                stamped = json.dumps({**record, PROMOTING_SINCE: time.time()}, sort_keys=True)
                patch.setdefault("metadata", {}).setdefault("annotations", {})[rs.ROLLING_FROM] = stamped
            elif not patch["spec"]:
                return None
            return patch

        self.api.update("deployments", self.deployment, change, current=deployment)
        image = mf.image_of(deployment, self.container)
        return f"Deployment {self.namespace}/{self.deployment} rolls its remaining replicas to {image}"

    def promote_roll_finish(self: KubernetesDriver) -> None:
        """The rollout is complete: drop the record (the Deployment is as the team applied it)."""

        def drop(current: dict[str, Any]) -> dict[str, Any] | None:
            if rs.recorded(current) is None:
                return None
            return rs.restore_patch(current, rs.recorded(current) or {}, None)

        self.api.update("deployments", self.deployment, drop)

    def promote_roll_revert(self: KubernetesDriver, deployment: dict[str, Any], reason: str) -> None:
        """The rollout failed: the undo's one change (``abort_roll``), then raise saying so."""
        started = self.abort_roll()
        raise PlatformError(
            f"Deployment {self.namespace}/{self.deployment} did not finish rolling to "
            f"{mf.image_of(deployment, self.container)}: {reason}; {started or 'nothing was left to undo'}"
        )

    def rolling_tracks(
        self: KubernetesDriver, deployment: dict[str, Any], record: dict[str, Any]
    ) -> tuple[TrackState, TrackState]:
        """``(stable, canary)`` mid-release: the older ReplicaSets' pods, the new one's."""
        new, old = rs.split_replica_sets(deployment, self.replica_sets(deployment))
        pods = self._all_pods(deployment)
        new_pods = rs.pods_of(new, pods)
        old_pods = [p for r in old for p in rs.pods_of(r, pods)]
        canary = TrackState(
            mf.image_of(deployment, self.container),
            len(new_pods),
            rs.ready_count(new_pods),
            rd.pod_failure(new_pods),
        )
        return TrackState(record.get("image", ""), len(old_pods), rs.ready_count(old_pods)), canary

    def rolling_selectors(self: KubernetesDriver, deployment: dict[str, Any]) -> dict[str, str]:
        new, old = rs.split_replica_sets(deployment, self.replica_sets(deployment))
        active = [r for r in old if int(r["spec"].get("replicas") or 0) > 0] or old
        return rs.selectors(self.namespace, self.deployment, new, active)

    def rolling_endpoints(self: KubernetesDriver, deployment: dict[str, Any], canary: bool) -> list[str]:
        new, old = rs.split_replica_sets(deployment, self.replica_sets(deployment))
        pods = self._all_pods(deployment)
        chosen = rs.pods_of(new, pods) if canary else [p for r in old for p in rs.pods_of(r, pods)]
        return pf.endpoint_urls(deployment, chosen, self.container)


def promoting_since(deployment: dict[str, Any], now: float) -> float:
    """When the promotion of the rolling release on ``deployment`` started (``now``, if it has not)."""
    return float((rs.recorded(deployment) or {}).get(PROMOTING_SINCE) or now)

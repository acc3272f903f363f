"""Kubernetes Deployments as a workload driver (``platform.kind: kubernetes``).

The stable track is the user's Deployment ``platform.deployment`` in ``platform.namespace``;
the canary track is ``<deployment>-canary``, derived from it (``manifests.canary_deployment``).
Everything is read from the API on every call: Airflow tasks and triggers in other
processes see the same state. Taking traffic away (before a canary is replaced or removed,
when it is found failed) goes through the service's router, from the same registry.

- ``promote`` sends all traffic to the ready canary, patches the stable Deployment's image
  to the canary's, waits up to ``promote_timeout`` for that rollout, then routes everything
  back to the stable Service and deletes the canary; a failed rollout is undone. It is made
  of steps (``promote_start``, ``promote_readiness``, ``promote_finish``, ``promote_revert``:
  ``promotion.StepwisePromotion``) so that a release's promote step waits deferred.
- ``scale`` patches ``spec.replicas`` and waits (up to ``settle_timeout``) for the track to
  settle: the stable track must be healthy again when it returns (raises if not), the
  canary's readiness is ``readiness()``'s to report.
- ``resolve_image`` asks the image's registry (HTTP API v2) whether the tag or digest
  exists, with the credentials of ``registry_conn_id`` when that connection names the
  registry; an unreachable registry refuses the image (it could not be confirmed).
- ``capacity``: the namespace's ResourceQuota on ``pods`` (hard, minus the pods other
  workloads use), else ``pods.NO_QUOTA_CAPACITY``.
"""

from __future__ import annotations

import time
from functools import cached_property
from typing import Any, Self

from opsdag.platforms.base import (
    CANARY,
    STABLE,
    ImageResolution,
    PlatformError,
    Readiness,
    RollbackTarget,
    Track,
    TrackState,
    TrafficRouter,
    WorkloadDriver,
    WorkloadStatus,
)
from opsdag.platforms.kubernetes import manifests as mf
from opsdag.platforms.kubernetes import pods as pf
from opsdag.platforms.kubernetes import readiness as rd
from opsdag.platforms.kubernetes import replicasets as rs
from opsdag.platforms.kubernetes.api import KubeApi
from opsdag.platforms.kubernetes.async_reads import AsyncReads
from opsdag.platforms.kubernetes.promotion import StepwisePromotion, scaled_to_zero
from opsdag.platforms.kubernetes.readiness import UNPULLABLE
from opsdag.platforms.kubernetes.rolling import InPlaceRolling


class KubernetesDriver(AsyncReads, StepwisePromotion, InPlaceRolling, WorkloadDriver):
    """Stable and canary Deployments of one service in one namespace.

    :param namespace: ``platform.namespace``.
    :param deployment: ``platform.deployment``, the stable Deployment (it must exist).
    :param container: ``platform.container``: the container running the service's image
        (None: the pod's only container).
    :param connection_id: ``platform.connection_id``, a ``kubernetes`` Airflow connection.
    :param spec: the service spec, to reach its router (None: no router, e.g. in unit tests).
    :param registry_conn_id: the Airflow connection whose login ``resolve_image`` uses when
        it names the image's registry (a missing connection: anonymous).
    :param settle_timeout: seconds ``scale`` waits for a track to settle.
    :param promote_timeout: seconds the stable Deployment's rollout may take, from the promotion's start.
    :param poll_interval: seconds between two reads while waiting.
    """

    kind = "kubernetes"

    def __init__(
        self,
        *,
        namespace: str,
        deployment: str,
        container: str | None = None,
        connection_id: str = "kubernetes_default",
        spec: Any = None,
        registry_conn_id: str | None = "docker_default",
        settle_timeout: float = 120.0,
        promote_timeout: float = 600.0,
        poll_interval: float = 0.5,
    ) -> None:
        self.namespace = namespace
        self.deployment = deployment
        self.container = container
        self.connection_id = connection_id
        self.spec = spec
        self.registry_conn_id = registry_conn_id
        self.settle_timeout = settle_timeout
        self.promote_timeout = promote_timeout
        self.poll_interval = poll_interval

    @classmethod
    def from_spec(cls, spec: Any) -> Self:
        platform = spec.platform
        if cls is KubernetesDriver and platform.router.kind == "service-selector":
            from opsdag.platforms.kubernetes.bluegreen import BlueGreenDriver

            return BlueGreenDriver.from_spec(spec)  # type: ignore[return-value]  # blue/green colours
        build = getattr(spec.image, "build", None)
        return cls(
            namespace=platform.namespace,
            deployment=platform.deployment,
            container=platform.container,
            connection_id=platform.connection_id,
            spec=spec,
            registry_conn_id=getattr(build, "docker_conn_id", None) or "docker_default",
        )

    @cached_property
    def api(self) -> KubeApi:
        return KubeApi(conn_id=self.connection_id, namespace=self.namespace)

    @cached_property
    def router(self) -> TrafficRouter | None:
        if self.spec is None:
            return None
        from opsdag.platforms.registry import router_for

        return router_for(self.spec)

    @property
    def canary_name(self) -> str:
        return mf.canary_name(self.deployment)

    # -- reading -----------------------------------------------------------------------------

    def stable_deployment(self) -> dict[str, Any]:
        """The stable Deployment; a missing one raises (there is nothing to release beside)."""
        return rd.require_stable(
            self.api.get("deployments", self.deployment), self.namespace, self.deployment
        )

    def canary_deployment(self) -> dict[str, Any] | None:
        return self.api.get("deployments", self.canary_name)

    def pods(self, deployment: dict[str, Any], track: Track) -> list[dict[str, Any]]:
        """The pods of a track's Deployment (the stable selector may match canary pods: not counted)."""
        return rd.track_pods(self.api.list("pods", rd.match_labels(deployment)), track)

    def status(self) -> WorkloadStatus:
        stable = self.stable_deployment()
        canary = self.canary_deployment()
        canary_failed = self.canary_failure(canary) if canary else None
        stable_state = self._track_state(stable, rd.deadline_exceeded(stable))
        canary_state = self._track_state(canary, canary_failed) if canary else None
        if canary is None and (record := rs.recorded(stable)) is not None:  # rolling in place
            stable_state, canary_state = self.rolling_tracks(stable, record)
        capacity, quota = self._capacity(stable, canary)
        return WorkloadStatus(
            stable=stable_state,
            canary=canary_state,
            capacity=capacity,
            details={
                "platform": "kubernetes",
                "namespace": self.namespace,
                "stable_deployment": self.deployment,
                "canary_deployment": self.canary_name if canary else None,
                "canary_version": (canary["metadata"].get("labels") or {}).get(mf.VERSION_LABEL)
                if canary
                else None,
                "canary_failed": canary_failed,
                "capacity_from": quota,
            },
        )

    def _track_state(self, deployment: dict[str, Any], failed: str | None) -> TrackState:
        desired, ready = rd.replica_counts(deployment)
        return TrackState(mf.image_of(deployment, self.container), desired, ready, failed)

    def _capacity(self, stable: dict[str, Any], canary: dict[str, Any] | None) -> tuple[int, str]:
        ours = sum(int((d.get("status") or {}).get("replicas") or 0) for d in (stable, canary) if d)
        return pf.capacity(self.api.list("resourcequotas"), ours)

    def resolve_image(self, image: str) -> ImageResolution:
        from opsdag.platforms.kubernetes.images import resolve

        return resolve(image, self.registry_conn_id)

    def canary_failure(self, canary: dict[str, Any]) -> str | None:
        """Why the canary will never be ready (its image is unpullable, a pod state, a deadline)."""
        unpullable = (canary["metadata"].get("annotations") or {}).get(UNPULLABLE)
        return unpullable or rd.failure(canary, self.pods(canary, CANARY))

    def readiness(self) -> Readiness:
        canary = self.canary_deployment()
        pods = self.pods(canary, CANARY) if canary else []
        result = rd.canary_readiness(canary, pods, f"{self.namespace}/{self.canary_name}")
        self.failed_canary_off(result, canary)
        return result

    def failed_canary_off(self, result: Readiness, canary: dict[str, Any] | None) -> None:
        """A failed canary gets no more traffic (blocking: the router's calls are)."""
        if result.failed and canary is not None and self.router is not None:
            self.router.set_weight(0)

    def access_problems(self) -> list[str]:
        """Every RBAC verb the release will need here that the connection's account lacks."""
        from opsdag.platforms.kubernetes import rbac

        router_kind = self.spec.platform.router.kind if self.spec is not None else None
        problems = []
        for (group, resource), verbs in rbac.rules_for(router_kind).items():
            if resource == "selfsubjectaccessreviews":
                continue  # asking is what this does
            for verb in verbs:
                ok, why = self.api.allowed(verb, group, resource)
                if not ok:
                    name = f"{resource}.{group}" if group else resource
                    problems.append(f"{verb} {name}" + (f" ({why})" if why else ""))
        return problems

    def rollback_target(self) -> RollbackTarget:
        """The stable image and replicas, and the canary's weight; refused (before any change)
        when the connection's account lacks an RBAC verb a release will need."""
        problems = self.access_problems()
        if problems:
            raise PlatformError(
                f"the account of connection {self.connection_id!r} may not, in namespace {self.namespace}: "
                f"{'; '.join(problems)} (the Role opsdag needs: opsdag.platforms.kubernetes.rbac)"
            )
        stable = self.stable_deployment()
        weight = 0
        if self.canary_deployment() is not None and self.router is not None:
            split = self.router.verify_weight()
            weight = split.requested if split.requested is not None else round(split.canary)
        self.check_planned_replicas(stable)
        return RollbackTarget(
            mf.image_of(stable, self.container), int(stable["spec"].get("replicas", 1)), weight
        )

    def metric_selectors(self) -> dict[str, str]:
        """``namespace`` and ``pod`` matchers (``pods.metric_selectors``).

        The canary's matcher names the pod-template-hash of its pods running its image now, so
        the series of an earlier canary, still in a query's rate window, never count as this
        one's. Read once the canary is ready (the release's deploy step does): before it has
        pods, the matcher is any canary pod.
        """
        if (rolling := self.rolling_deployment()) is not None:
            return self.rolling_selectors(rolling)
        canary = self.canary_deployment()
        if canary is None:
            return pf.metric_selectors(self.namespace, self.deployment, [])
        image = mf.image_of(canary, self.container)
        return pf.metric_selectors(self.namespace, self.deployment, self.pods(canary, CANARY), image)

    def endpoints(self, track: Track) -> list[str]:
        if (rolling := self.rolling_deployment()) is not None:
            return self.rolling_endpoints(rolling, canary=track == CANARY)
        deployment = self.stable_deployment() if track == STABLE else self.canary_deployment()
        if deployment is None:
            return []
        return pf.endpoint_urls(deployment, self.pods(deployment, track), self.container)

    # -- changing ----------------------------------------------------------------------------

    def start(self, image: str, instances: int) -> None:
        if instances < 1:
            raise PlatformError(f"a canary needs at least 1 instance, {instances} asked")
        stable = self.stable_deployment()
        wanted = mf.canary_deployment(stable, image=image, replicas=instances, container=self.container)
        # Known unpullable (its registry has no such image): the canary is failed at once,
        # rather than when a kubelet finds out.
        resolution = self.resolve_image(image)
        unpullable = None if resolution.pullable else resolution.reason
        canary = self.canary_deployment()
        if canary is None:
            if unpullable:
                wanted["metadata"]["annotations"][UNPULLABLE] = unpullable
            self.api.create("deployments", wanted)
            return
        if mf.image_of(canary, self.container) != image:
            if self.router is not None:
                self.router.set_weight(0)  # the old canary's traffic goes to stable first
            patch = {
                "metadata": {"labels": wanted["metadata"]["labels"], "annotations": {UNPULLABLE: unpullable}},
                "spec": {"replicas": instances, "template": wanted["spec"]["template"]},
            }
            self.api.merge_patch("deployments", self.canary_name, patch)
        elif int(canary["spec"].get("replicas", 1)) != instances:
            self.api.merge_patch("deployments", self.canary_name, {"spec": {"replicas": instances}})

    track_kind = "Deployment"  # what a track's Deployment is called in messages

    def track_deployment(self, track: Track) -> tuple[str, dict[str, Any] | None]:
        """The name of a track's Deployment and the Deployment (None: it does not run)."""
        name = self.deployment if track == STABLE else self.canary_name
        return name, self.api.get("deployments", name)

    def scale(self, track: Track, instances: int) -> None:
        name, found = self.track_deployment(track)
        if track == STABLE and instances < 1:
            raise PlatformError(
                f"the stable {self.track_kind} {name} never goes below 1 replica ({instances} asked)"
            )
        if instances < 0:
            raise PlatformError(f"replicas cannot be negative ({instances} asked)")
        if found is None:
            raise PlatformError(f"no {track} {self.track_kind} {name} in namespace {self.namespace} to scale")
        if int(found["spec"].get("replicas", 1)) != instances:
            self.api.merge_patch("deployments", name, {"spec": {"replicas": instances}})
        self._wait_settled(name, track, self.settle_timeout, must=track == STABLE)

    def remove(self, track: Track = CANARY) -> None:
        if track == STABLE:
            raise PlatformError(
                f"the stable Deployment {self.deployment} is the service's own: promote() replaces its image"
            )
        if self.router is not None:
            self.router.set_weight(0)  # out of traffic before it stops
        self.api.delete("deployments", self.canary_name)

    def _wait_settled(self, name: str, track: Track, timeout: float, *, must: bool) -> None:
        deadline = time.monotonic() + timeout
        while True:
            deployment = self.api.get("deployments", name)
            if deployment is None:
                raise PlatformError(f"Deployment {name} in namespace {self.namespace} disappeared")
            result = rd.rollout_readiness(deployment, self.pods(deployment, track))
            if scaled_to_zero(deployment) or result.ready or (result.failed and not must):
                return
            if result.failed or time.monotonic() > deadline:
                why = (
                    result.reason if result.failed else f"not settled after {timeout:.0f} s: {result.reason}"
                )
                if must:
                    raise PlatformError(why)
                return
            time.sleep(self.poll_interval)

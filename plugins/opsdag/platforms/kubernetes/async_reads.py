"""The Kubernetes driver's waits, read in the triggerer without a thread (a mixin of ``KubernetesDriver``).

``readiness_async``, ``roll_readiness_async`` and ``promote_readiness_async`` read what their
sync twins read, through ``AsyncKubeApi`` (the provider's ``AsyncKubernetesHook``), then
decide with the same pure functions (``readiness.canary_readiness``,
``replicasets.batch_readiness``, ``promotion.promotion_readiness``): a decision exists once.
A subclass that reads its tracks otherwise (the blue-green driver's colours) takes
``WorkloadDriver``'s twins back by name (its own sync method in a thread), so it never gets
the plain Deployments read here.
"""

from __future__ import annotations

import asyncio
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any

from opsdag.platforms.base import CANARY, STABLE, Readiness, Track
from opsdag.platforms.kubernetes import readiness as rd
from opsdag.platforms.kubernetes import replicasets as rs

if TYPE_CHECKING:
    from opsdag.platforms.kubernetes.async_api import AsyncKubeApi
    from opsdag.platforms.kubernetes.driver import KubernetesDriver


class AsyncReads:
    """Async twins of the Kubernetes driver's three waits; see the module docstring."""

    @cached_property
    def async_api(self: KubernetesDriver) -> AsyncKubeApi:
        from opsdag.platforms.kubernetes.async_api import AsyncKubeApi

        return AsyncKubeApi(conn_id=self.connection_id, namespace=self.namespace)

    # -- the reads ---------------------------------------------------------------------------

    async def stable_deployment_async(self: KubernetesDriver) -> dict[str, Any]:
        found = await self.async_api.get("deployments", self.deployment)
        return rd.require_stable(found, self.namespace, self.deployment)

    async def pods_async(
        self: KubernetesDriver, deployment: dict[str, Any], track: Track
    ) -> list[dict[str, Any]]:
        return rd.track_pods(await self.async_api.list("pods", rd.match_labels(deployment)), track)

    # -- the waits ---------------------------------------------------------------------------

    async def readiness_async(self: KubernetesDriver) -> Readiness:
        canary = await self.async_api.get("deployments", self.canary_name)
        pods = await self.pods_async(canary, CANARY) if canary else []
        result = rd.canary_readiness(canary, pods, f"{self.namespace}/{self.canary_name}")
        if result.failed:
            await asyncio.to_thread(self.failed_canary_off, result, canary)
        return result

    async def roll_readiness_async(
        self: KubernetesDriver, image: str, updated: int, since: float
    ) -> Readiness:
        deployment = await self.stable_deployment_async()
        selector = rd.match_labels(deployment)
        replica_sets = rs.owned(deployment, await self.async_api.list("replicasets", selector))
        return rs.batch_readiness(
            deployment,
            replica_sets,
            await self.async_api.list("pods", selector),
            image=image,
            container=self.container,
            updated=updated,
            since=since,
            now=time.time(),
        )

    async def promote_readiness_async(self: KubernetesDriver) -> Readiness:
        from opsdag.platforms.kubernetes.promotion import promotion_readiness

        canary = await self.async_api.get("deployments", self.canary_name)
        stable = await self.stable_deployment_async()
        pods = await self.pods_async(stable, STABLE)
        return promotion_readiness(canary, stable, pods, self.canary_name, self.promote_timeout, time.time())

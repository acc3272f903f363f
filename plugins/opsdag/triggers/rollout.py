"""Wait for a new version's instances to become ready (or fail for good) without holding a worker slot.

Readiness comes from the service's workload driver (``driver_for(service).readiness_async()``:
the Kubernetes driver reads through the provider's ``AsyncKubernetesHook``, others run their
blocking ``readiness()`` in a thread); for a batch of a rolling release in place (``updated``
given), from ``roll_readiness_async(image, updated, started_at)``; for a promotion
(``promotion``), from ``promote_readiness_async()``: the stable instances rolling to the
promoted version. When the new
instances may already take traffic (a rolling batch) and readiness fails for good or times
out, ``abort`` takes traffic off the new version through the router before the event goes
out, as the analysis trigger does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from opsdag.platforms.base import Readiness
from opsdag.triggers.polling import poll_readiness
from opsdag.triggers.traffic_abort import TrafficAbort, check_abort


class RolloutStatusTrigger(BaseTrigger):
    """Poll the new version's readiness until ready, failed, or ``timeout_at`` (epoch seconds).

    The event: ``{"status": "ready" | "failed" | "timeout", "image", "reason", "decided_at",
    "abort"}`` (``abort`` None unless one was asked for and the version is not ready).

    :param service: the service spec as JSON (no secrets: connections are resolved by the driver).
    :param image: the image being rolled out, for the messages.
    :param timeout_at: absolute deadline, so a restarted triggerer keeps the same deadline.
    :param poll_interval: seconds between two readiness checks.
    :param abort: ``{"service": <ServiceSpec JSON>, "action": ...}`` (see
        :mod:`opsdag.triggers.traffic_abort`): done when readiness fails or times out. None: no abort.
    :param updated: a rolling batch in place: how many new instances it must have ready
        (``WorkloadDriver.roll_readiness``). None: the canary track's ``readiness()``.
    :param started_at: when that batch started (epoch seconds): the progress deadline counts from it.
    :param promotion: wait for the rollout ``WorkloadDriver.promote_start`` began
        (``promote_readiness``, whose deadline the platform keeps); ``timeout_at`` is then a backstop.
    """

    def __init__(
        self,
        *,
        service: dict[str, Any],
        image: str,
        timeout_at: float,
        poll_interval: float = 1.0,
        abort: dict[str, Any] | None = None,
        updated: int | None = None,
        started_at: float | None = None,
        promotion: bool = False,
    ):
        super().__init__()
        self.service = service
        self.image = image
        self.timeout_at = timeout_at
        self.poll_interval = poll_interval
        self.abort = check_abort(abort)
        self.updated = updated
        self.started_at = started_at
        self.promotion = promotion

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "service": self.service,
                "image": self.image,
                "timeout_at": self.timeout_at,
                "poll_interval": self.poll_interval,
                "abort": self.abort,
                "updated": self.updated,
                "started_at": self.started_at,
                "promotion": self.promotion,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from opsdag.platforms.registry import driver_for

        driver = await asyncio.to_thread(driver_for, self.service)
        traffic = TrafficAbort(self.abort, self.log) if self.abort else None
        if traffic:
            await traffic.prepare()
        read = self._readiness(driver)
        outcome, readiness = await poll_readiness(read, self.timeout_at, self.poll_interval)
        status, reason = outcome, readiness.reason
        if outcome == "timeout":
            reason = f"{self.image} not ready before the deadline: {readiness.reason or 'still starting'}"
        event = {"status": status, "image": self.image, "reason": reason, "decided_at": time.time()}
        event["abort"] = await traffic.perform() if traffic and status != "ready" else None
        yield TriggerEvent(event)

    def _readiness(self, driver: Any) -> Callable[[], Awaitable[Readiness]]:
        """The driver's read this trigger waits on: a promotion, a rolling batch, or a new version."""
        if self.promotion:
            return driver.promote_readiness_async
        if self.updated is None:
            return driver.readiness_async
        return lambda: driver.roll_readiness_async(
            self.image, self.updated, self.started_at if self.started_at is not None else time.time()
        )

"""Wait for a weight change to be in force without holding a worker slot (``TrafficRouter.settles_later``).

A replica ratio's weight is the canary Deployment's replica count: the change is made at once
(``start_weight``) and in force once that many canary pods take traffic, seconds or minutes
later. This trigger polls the router's ``weight_settled_async()`` (the Kubernetes router reads
through the driver's ``AsyncKubeApi``, so no blocking client runs in the triggerer's loop)
until the split is in force, the canary failed for good, or ``timeout_at``.

A canary that fails while its weight settles already takes a share from its ready pods: as
the other triggers that see a failing verdict, this one takes traffic off it itself
(``abort``, ``weight_zero``) before the event goes out. A timeout is not a failing verdict
(the ready pods take their share, which ``verify_weight`` reads back): no abort.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from opsdag.triggers.polling import poll_readiness
from opsdag.triggers.traffic_abort import TrafficAbort, check_abort


class WeightSettledTrigger(BaseTrigger):
    """Poll whether the split the service's router set is in force, until so, failed, or ``timeout_at``.

    The event: ``{"status": "settled" | "failed" | "timeout", "weight", "reason", "decided_at",
    "abort"}`` (``abort``: what the abort did when the canary failed, else None).

    :param service: the service spec as JSON (no secrets: connections are resolved by the router).
    :param weight: the percent asked, for the messages.
    :param timeout_at: absolute deadline (epoch seconds), so a restarted triggerer keeps it.
    :param poll_interval: seconds between two reads.
    :param abort: ``{"service": <ServiceSpec JSON>, "action": ...}`` (see
        :mod:`opsdag.triggers.traffic_abort`): done when the canary fails. None: no abort.
    """

    def __init__(
        self,
        *,
        service: dict[str, Any],
        weight: int,
        timeout_at: float,
        poll_interval: float = 1.0,
        abort: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.service = service
        self.weight = weight
        self.timeout_at = timeout_at
        self.poll_interval = poll_interval
        self.abort = check_abort(abort)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "service": self.service,
                "weight": self.weight,
                "timeout_at": self.timeout_at,
                "poll_interval": self.poll_interval,
                "abort": self.abort,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from opsdag.platforms.registry import router_for

        router = await asyncio.to_thread(router_for, self.service)
        traffic = TrafficAbort(self.abort, self.log) if self.abort else None
        if traffic:
            await traffic.prepare()
        read = router.weight_settled_async
        outcome, settled = await poll_readiness(read, self.timeout_at, self.poll_interval)
        status, reason = ("settled" if outcome == "ready" else outcome), settled.reason
        if outcome == "timeout":
            reason = f"{self.weight} % not in force before the deadline: {settled.reason}"
        event = {"status": status, "weight": self.weight, "reason": reason, "decided_at": time.time()}
        event["abort"] = await traffic.perform() if traffic and status == "failed" else None
        yield TriggerEvent(event)

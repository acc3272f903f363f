"""Wait for a canary to become ready (or fail for good) without holding a worker slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class RolloutStatusTrigger(BaseTrigger):
    """Poll the platform's canary readiness until ready, failed, or ``timeout_at`` (epoch seconds).

    :param service: the service spec as JSON (no secrets: connections are resolved by the driver).
    :param image: the image being rolled out, for the messages.
    :param timeout_at: absolute deadline, so a restarted triggerer keeps the same deadline.
    :param poll_interval: seconds between two readiness checks.
    """

    def __init__(self, *, service: dict[str, Any], image: str, timeout_at: float, poll_interval: float = 1.0):
        super().__init__()
        self.service = service
        self.image = image
        self.timeout_at = timeout_at
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "service": self.service,
                "image": self.image,
                "timeout_at": self.timeout_at,
                "poll_interval": self.poll_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from opsdag.platforms import platform_for

        platform = platform_for(self.service)
        while True:
            readiness = await asyncio.to_thread(platform.canary_readiness)
            if readiness.ready or readiness.failed:
                status = "ready" if readiness.ready else "failed"
                yield TriggerEvent({"status": status, "image": self.image, "reason": readiness.reason})
                return
            if time.time() >= self.timeout_at:
                yield TriggerEvent(
                    {
                        "status": "timeout",
                        "image": self.image,
                        "reason": f"{self.image} not ready before the deadline: "
                        f"{readiness.reason or 'still starting'}",
                    }
                )
                return
            await asyncio.sleep(self.poll_interval)

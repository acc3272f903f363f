"""The wait shared by the triggers that poll a ``Readiness``: until ready, failed for good, or a deadline.

``RolloutStatusTrigger`` polls the driver's readiness of a new version, ``WeightSettledTrigger``
the router's split; both decide the same way, so the loop is here once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from opsdag.platforms.base import Readiness

Outcome = Literal["ready", "failed", "timeout"]


async def poll_readiness(
    read: Callable[[], Awaitable[Readiness]], timeout_at: float, poll_interval: float
) -> tuple[Outcome, Readiness]:
    """Await ``read()`` every ``poll_interval`` s until it is ready or failed, or ``timeout_at``
    (epoch seconds) has passed; the outcome and the last reading."""
    while True:
        readiness = await read()
        if readiness.ready:
            return "ready", readiness
        if readiness.failed:
            return "failed", readiness
        if time.time() >= timeout_at:
            return "timeout", readiness
        await asyncio.sleep(poll_interval)

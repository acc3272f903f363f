"""Where a service's workloads run (workload drivers) and how its traffic is split (routers).

``registry.driver_for(spec)`` / ``registry.router_for(spec)`` are the only places that look
at ``platform.kind`` and ``platform.router.kind``; everything after them (operators,
triggers, strategies) uses the ``WorkloadDriver`` and ``TrafficRouter`` interfaces of
``base``. ``weights`` holds the traffic arithmetic.
"""

from __future__ import annotations

from opsdag.platforms.base import PlatformError, TrafficRouter, WorkloadDriver
from opsdag.platforms.registry import NoDriver, NoRouter, driver_for, router_for

__all__ = [
    "NoDriver",
    "NoRouter",
    "PlatformError",
    "TrafficRouter",
    "WorkloadDriver",
    "driver_for",
    "router_for",
]

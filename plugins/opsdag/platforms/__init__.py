"""Where a service's workloads run (workload drivers) and how its traffic is split (routers).

``registry.driver_for(spec)`` / ``registry.router_for(spec)`` are the only places that look
at ``platform.kind`` and ``platform.router.kind``; everything after them (operators,
triggers, strategies) uses the ``WorkloadDriver`` and ``TrafficRouter`` interfaces of
``base``. ``platform_for`` gives the first, one-piece ``Platform`` until no operator uses it.
"""

from __future__ import annotations

from typing import Any

from opsdag.platforms.base import (
    CanaryReadiness,
    Platform,
    PlatformError,
    PlatformStatus,
    TrafficRouter,
    WorkloadDriver,
)
from opsdag.platforms.registry import NoDriver, NoRouter, driver_for, router_for

# The one-piece drivers, by platform kind (going away with ``Platform``).
_PLATFORMS = {"sandbox": "opsdag.platforms.sandbox:SandboxPlatform"}


def platform_for(spec: Any) -> Platform:
    """The one-piece driver for a service spec (or its JSON form, as triggers receive it)."""
    import importlib

    from opsdag.spec.service import ServiceSpec

    if isinstance(spec, dict):
        spec = ServiceSpec.model_validate(spec)
    kind = spec.platform.kind
    if kind not in _PLATFORMS:
        raise NoDriver(f"platform.kind: {kind!r} has no workload driver in this version of opsdag")
    module, _, name = _PLATFORMS[kind].partition(":")
    return getattr(importlib.import_module(module), name)(
        service_name=spec.name, instances=spec.platform.instances
    )


__all__ = [
    "CanaryReadiness",
    "NoDriver",
    "NoRouter",
    "Platform",
    "PlatformError",
    "PlatformStatus",
    "TrafficRouter",
    "WorkloadDriver",
    "driver_for",
    "platform_for",
    "router_for",
]

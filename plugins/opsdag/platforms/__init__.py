"""Platform drivers: where a service's workloads run and how its traffic is split.

``platform_for(spec)`` is the only place that looks at the platform's kind; everything
after it (operators, triggers, DAGs) uses the ``Platform`` interface.
"""

from __future__ import annotations

from typing import Any

from opsdag.platforms.base import CanaryReadiness, Platform, PlatformStatus
from opsdag.spec.service import ServiceSpec


def platform_for(spec: ServiceSpec | dict[str, Any]) -> Platform:
    """The driver for a service spec (or its JSON form, as triggers receive it)."""
    if isinstance(spec, dict):
        spec = ServiceSpec.model_validate(spec)
    kind = spec.platform.kind
    if kind == "sandbox":
        from opsdag.platforms.sandbox import SandboxPlatform

        return SandboxPlatform(service_name=spec.name, instances=spec.platform.instances)
    raise NotImplementedError(
        f"service {spec.name}: platform kind {kind!r} has no driver in this version of opsdag"
    )


__all__ = ["CanaryReadiness", "Platform", "PlatformStatus", "platform_for"]

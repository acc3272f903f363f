"""Which workload driver and traffic router a service uses: ``kind`` -> class, in one place.

The tables hold import paths (``"module:Class"``), so parsing a DAG imports no driver;
the class is imported on first use. Every driver and router has a ``from_spec(spec)``
class method. No other module looks at ``platform.kind`` or ``platform.router.kind``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opsdag.platforms.base import TrafficRouter, WorkloadDriver
    from opsdag.spec.service import ServiceSpec

DRIVERS: dict[str, str] = {
    "sandbox": "opsdag.platforms.sandbox:SandboxDriver",
    "kubernetes": "opsdag.platforms.kubernetes.driver:KubernetesDriver",
}
ROUTERS: dict[str, str] = {
    "haproxy": "opsdag.platforms.routers.haproxy:HaproxyRouter",
    "gateway-api": "opsdag.platforms.routers.gateway_api:GatewayApiRouter",
    "nginx": "opsdag.platforms.routers.nginx_ingress:NginxIngressRouter",
    "replica-ratio": "opsdag.platforms.routers.replica_ratio:ReplicaRatioRouter",
    "service-selector": "opsdag.platforms.routers.service_selector:ServiceSelectorRouter",
}


class NoDriver(LookupError):
    """No workload driver (or traffic router) for a kind; the message names the spec field."""


class NoRouter(NoDriver):
    """No traffic router for ``platform.router.kind``."""


def register_driver(kind: str, path: str) -> None:
    """Make ``platform.kind: <kind>`` use the driver class at ``path`` (``"module:Class"``)."""
    DRIVERS[kind] = _checked(path)


def register_router(kind: str, path: str) -> None:
    """Make ``platform.router.kind: <kind>`` use the router class at ``path`` (``"module:Class"``)."""
    ROUTERS[kind] = _checked(path)


def driver_for(spec: ServiceSpec | dict[str, Any]) -> WorkloadDriver:
    """The workload driver of a service spec (or its JSON form, as triggers receive it)."""
    spec = _service(spec)
    kind = spec.platform.kind
    if kind not in DRIVERS:
        raise NoDriver(f"platform.kind: {kind!r} has no workload driver in this version of opsdag")
    return _load(DRIVERS[kind], "platform.kind", kind).from_spec(spec)


def router_for(spec: ServiceSpec | dict[str, Any]) -> TrafficRouter:
    """The traffic router of a service spec (or its JSON form)."""
    spec = _service(spec)
    kind = spec.platform.router.kind
    if kind not in ROUTERS:
        raise NoRouter(f"platform.router.kind: {kind!r} has no traffic router in this version of opsdag")
    return _load(ROUTERS[kind], "platform.router.kind", kind).from_spec(spec)


def router_class(spec: ServiceSpec | dict[str, Any]) -> type[TrafficRouter]:
    """The router's class, for what it can do (``can_split``, ``can_preview``) without building one."""
    spec = _service(spec)
    kind = spec.platform.router.kind
    if kind not in ROUTERS:
        raise NoRouter(f"platform.router.kind: {kind!r} has no traffic router in this version of opsdag")
    return _load(ROUTERS[kind], "platform.router.kind", kind)


def _service(spec: ServiceSpec | dict[str, Any]) -> ServiceSpec:
    from opsdag.spec.service import ServiceSpec

    return ServiceSpec.model_validate(spec) if isinstance(spec, dict) else spec


def _checked(path: str) -> str:
    module, sep, name = path.partition(":")
    if not sep or not module or not name.isidentifier():
        raise ValueError(f"{path!r} is not an import path like 'package.module:ClassName'")
    return path


def _load(path: str, field: str, kind: str) -> Any:
    module, _, name = path.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise NoDriver(f"{field}: {kind!r} is registered as {path}, which cannot be imported: {exc}") from exc

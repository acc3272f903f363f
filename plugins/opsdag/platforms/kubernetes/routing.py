"""What the Kubernetes routers that route to Services share: the stable Service, the canary's.

A router (HTTPRoute weights, an NGINX canary Ingress) sends the canary's share to
``<service>-canary``, a copy of the stable Service selecting ``track: canary``
(``manifests.canary_service``). ``ServiceRouting`` checks the stable Service exists and
does not also select the canary's pods, refuses traffic to a canary that does not run or
failed, creates the canary Service before a route refers to it and deletes it after.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar, Self

from opsdag.platforms.base import PlatformError, TrafficRouter
from opsdag.platforms.kubernetes import manifests as mf
from opsdag.platforms.kubernetes.api import KubeApi
from opsdag.platforms.kubernetes.driver import KubernetesDriver


class ServiceRouting:
    """The Services of one Deployment's stable and canary tracks in ``namespace``."""

    def __init__(self, *, namespace: str, deployment: str, container: str | None, connection_id: str) -> None:
        self.namespace = namespace
        self.deployment = deployment
        self.container = container
        self.connection_id = connection_id

    @cached_property
    def api(self) -> KubeApi:
        return KubeApi(conn_id=self.connection_id, namespace=self.namespace)

    @cached_property
    def driver(self) -> KubernetesDriver:
        """The Deployments' reader (without a router of its own: the router takes traffic away)."""
        return KubernetesDriver(
            namespace=self.namespace,
            deployment=self.deployment,
            container=self.container,
            connection_id=self.connection_id,
        )

    def stable_service(self, name: str, referred_by: str) -> dict[str, Any]:
        """The Service ``name`` a route refers to; refused if missing or if it selects canary pods."""
        service = self.api.get("services", name)
        if service is None:
            raise PlatformError(f"{referred_by} refers to Service {name}, which does not exist")
        labels = mf.canary_pod_labels(self.driver.stable_deployment())
        if mf.selects_canary_pods(service, labels):
            selector = mf.selector_string(service["spec"]["selector"])
            raise PlatformError(
                f"Service {self.namespace}/{name} selects {selector}, which the canary's pods carry too: "
                "the split would not be the router's. Label the stable pods track: stable and add it to "
                "the Service's selector"
            )
        return service

    def open_canary(self, service: dict[str, Any], percent: int) -> str:
        """Make sure the canary can take ``percent`` and has its Service; the Service's name."""
        canary = self.driver.canary_deployment()
        if canary is None:
            raise PlatformError(
                f"no canary Deployment {self.driver.canary_name} runs: it cannot take {percent} %"
            )
        failed = self.driver.canary_failure(canary)
        if failed:
            raise PlatformError(f"the canary failed, it gets no traffic: {failed}")
        return self.api.create("services", mf.canary_service(service), read_first=True)["metadata"]["name"]

    def close_canary(self, service_name: str) -> None:
        """Delete the canary Service (once nothing routes to it)."""
        self.api.delete("services", mf.canary_name(service_name))


class KubeRouter(TrafficRouter):
    """The base of the Kubernetes routers: the platform's fields, and its router section's.

    ``from_spec`` passes every field of ``platform.router`` but ``kind`` to the constructor
    as a keyword of the same name, so a router's spec class and its constructor say the same.
    """

    def __init__(
        self,
        *,
        namespace: str,
        deployment: str,
        container: str | None = None,
        connection_id: str = "kubernetes_default",
    ) -> None:
        self.namespace = namespace
        self.deployment = deployment
        self.container = container
        self.connection_id = connection_id

    @classmethod
    def from_spec(cls, spec: Any) -> Self:
        platform = spec.platform
        return cls(
            namespace=platform.namespace,
            deployment=platform.deployment,
            container=platform.container,
            connection_id=platform.connection_id,
            **platform.router.model_dump(exclude={"kind"}),
        )


class ServiceRouter(KubeRouter):
    """The base of the routers splitting between the stable Service and ``<service>-canary``.

    Holds the API and the ``ServiceRouting`` both routers use; a subclass names the object it
    routes through (``routed_field``: its ``platform.router`` field) and reads it with
    ``routed_object``.
    """

    can_split = True
    can_preview = False
    routed_field: ClassVar[str]

    @cached_property
    def services(self) -> ServiceRouting:
        return ServiceRouting(
            namespace=self.namespace,
            deployment=self.deployment,
            container=self.container,
            connection_id=self.connection_id,
        )

    @property
    def api(self) -> KubeApi:
        return self.services.api

    def routed_object(self, resource: str, name: str, kind: str) -> dict[str, Any]:
        """The service's ``resource``/``name``; a PlatformError naming the spec field when it is missing."""
        found = self.api.get(resource, name)
        if found is None:
            raise PlatformError(
                f"get {resource}/{name} in namespace {self.namespace}: not found "
                f"(platform.router.{self.routed_field} must name the service's {kind})"
            )
        return found

    @staticmethod
    def check_percent(percent: Any) -> None:
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise PlatformError(f"canary weight must be a whole percent from 0 to 100, got {percent!r}")

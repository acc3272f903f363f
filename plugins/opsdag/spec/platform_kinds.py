"""Where a service runs: the platform kinds and, for each, how its traffic is routed.

``platform.kind`` chooses the workload driver and ``platform.router.kind`` the traffic
router (see :mod:`opsdag.platforms.registry`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from opsdag.spec.common import DnsName, StrictModel


class HaproxyRouterSpec(StrictModel):
    """The sandbox's HAProxy: server weights and a preview route through its runtime API."""

    kind: Literal["haproxy"]


class SandboxPlatformSpec(StrictModel):
    """The embedded demo platform: local processes behind HAProxy."""

    kind: Literal["sandbox"]
    instances: int = Field(default=2, ge=1, le=8, description="processes per version")
    router: HaproxyRouterSpec = Field(default_factory=lambda: HaproxyRouterSpec(kind="haproxy"))


class ReplicaRatioRouterSpec(StrictModel):
    """Traffic follows the ratio of canary to stable replicas behind one Service (no traffic manager).

    The stable Deployment keeps its replicas; a weight sets the canary's replica count whose
    share is nearest to it (``opsdag.platforms.routers.replica_ratio``).
    """

    kind: Literal["replica-ratio"]
    service: DnsName | None = Field(
        default=None,
        description="the Service in front of both tracks' pods (default: named like platform.deployment)",
    )
    max_canary_replicas: int = Field(
        default=10,
        ge=1,
        le=100,
        description="the most replicas a weight gives the canary (100 % gives it this many)",
    )


class NginxRouterSpec(StrictModel):
    """NGINX ingress canary annotations on a copy of the service's Ingress."""

    kind: Literal["nginx"]
    ingress: DnsName


class GatewayApiRouterSpec(StrictModel):
    """Gateway API HTTPRoute backend weights."""

    kind: Literal["gateway-api"]
    http_route: DnsName


class ServiceSelectorRouterSpec(StrictModel):
    """Blue-green by Service selectors: ``<deployment>-blue`` / ``-green``, one switch of the
    active Service's selector; no weights (canary is refused for it)."""

    kind: Literal["service-selector"]
    active_service: DnsName = Field(description="the Service that serves: it selects the stable colour")
    preview_service: DnsName = Field(description="the Service that reaches the new colour before the switch")


RouterSpec = Annotated[
    ReplicaRatioRouterSpec | NginxRouterSpec | GatewayApiRouterSpec | ServiceSelectorRouterSpec,
    Field(discriminator="kind"),
]


class KubernetesPlatformSpec(StrictModel):
    """Deployments in a namespace, reached through an Airflow Kubernetes connection."""

    kind: Literal["kubernetes"]
    namespace: DnsName
    deployment: DnsName
    container: DnsName | None = None
    connection_id: str = "kubernetes_default"
    replicas: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description=(
            "the Deployment's spec.replicas, which rolling batches are planned for when the DAG is "
            "built; required by the rolling strategy; preflight refuses a release when they differ"
        ),
    )
    router: RouterSpec = Field(default_factory=lambda: ReplicaRatioRouterSpec(kind="replica-ratio"))

    @property
    def instances(self) -> int | None:
        """Instances per version as the spec says (``replicas``): ``ServiceSpec.instances()``."""
        return self.replicas


PlatformSpec = Annotated[SandboxPlatformSpec | KubernetesPlatformSpec, Field(discriminator="kind")]

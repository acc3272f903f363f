"""The one interface every platform driver implements.

A release DAG talks to a workload only through this interface, so it never branches
on the platform's name (sandbox processes, Kubernetes Deployments, Docker containers).
Every method is idempotent: calling it twice leaves the same state as calling it once.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class CanaryReadiness:
    """Whether the canary can take traffic; ``failed`` means it never will (bad image, crash)."""

    ready: bool
    failed: bool = False
    reason: str = ""


@dataclass(frozen=True)
class PlatformStatus:
    """What runs now: stable and canary versions (image refs) and the canary's share in percent."""

    stable_image: str | None
    canary_image: str | None
    canary_weight: int
    stable_healthy: bool
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Platform(abc.ABC):
    """Where a service's workloads run and how traffic is split between stable and canary."""

    @abc.abstractmethod
    def status(self) -> PlatformStatus:
        """Current stable/canary versions and traffic split."""

    @abc.abstractmethod
    def deploy_canary(self, image: str) -> None:
        """Start the canary at 0 % traffic. A canary already running ``image`` is kept as is."""

    @abc.abstractmethod
    def canary_readiness(self) -> CanaryReadiness:
        """Ready, still starting, or failed for good (with the reason in words)."""

    @abc.abstractmethod
    def set_canary_weight(self, percent: int) -> None:
        """Send ``percent`` (0..100) of the traffic to the canary, the rest to stable."""

    @abc.abstractmethod
    def promote(self) -> None:
        """Make the canary's version the stable one at 100 % and remove the old stable."""

    @abc.abstractmethod
    def rollback(self) -> None:
        """Canary weight to 0 at once, then remove the canary; stable keeps serving."""

    @abc.abstractmethod
    def metric_selectors(self) -> dict[str, str]:
        """PromQL label matchers for ``{canary}`` and ``{stable}`` placeholders in analysis queries."""

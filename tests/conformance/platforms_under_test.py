"""The platforms the conformance suite runs against: one factory per platform kind.

Each factory builds a ``PlatformUnderTest`` (a driver and a router chosen through the
registry from a real service spec, the images to release, a way back to the starting
state). The sandbox is here now; Kubernetes (issue 15) adds its factory to ``PLATFORMS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from opsdag import paths
from opsdag.platforms.base import TrafficRouter, WorkloadDriver
from opsdag.platforms.registry import driver_for, router_for
from opsdag.spec.loader import read_yaml
from opsdag.spec.service import ServiceSpec


@dataclass
class PlatformUnderTest:
    """A driver + router pair, the images a test releases on it, and how to get back to the start.

    Before and after every test, ``stable_image`` runs ``instances`` instances, alone, with
    all the traffic.
    """

    name: str
    driver: WorkloadDriver
    router: TrafficRouter
    stable_image: str
    new_image: str  # a healthy new version
    other_image: str  # another healthy version (a second release)
    unpullable_image: str  # a reference the platform cannot run
    crashing_image: str | None  # a version whose instances exit at start (None: the platform has none)
    instances: int
    reset: Callable[[], None]
    ready_timeout: float = 30.0


def _sandbox(request: pytest.FixtureRequest) -> PlatformUnderTest:
    sandbox = request.getfixturevalue("sandbox")
    path = paths.include_dir() / "services" / "demo-api.yaml"
    spec = ServiceSpec.model_validate(read_yaml(path.read_text(encoding="utf-8")))
    instances = spec.platform.instances
    return PlatformUnderTest(
        name="sandbox+haproxy",
        driver=driver_for(spec),
        router=router_for(spec),
        stable_image=sandbox.image("1.0.0"),
        new_image=sandbox.image("1.1.0"),
        other_image=sandbox.image("1.3.0-slow"),
        unpullable_image=sandbox.image("9.9.9"),
        crashing_image=sandbox.image("1.4.0-crash"),
        instances=instances,
        reset=lambda: sandbox.reset("1.0.0", instances),
    )


PLATFORMS: dict[str, Callable[[pytest.FixtureRequest], PlatformUnderTest]] = {
    "sandbox": _sandbox,
}

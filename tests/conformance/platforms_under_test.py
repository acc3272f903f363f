"""The platforms the conformance suite runs against: one factory per platform kind.

Each factory builds a ``PlatformUnderTest`` (a driver and a router chosen through the
registry from a real service spec, the images to release, a way back to the starting
state). The sandbox, and Kubernetes (issue 15) with each router registered for it: the
driver against kmock's emulator, a test controller playing the cluster, and a real
registry holding the versions (``support.kube_controller.KubeReleaseCluster``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


_KUBE: list = []  # the one KubeReleaseCluster of the session, started on first use


def _kube_cluster(request: pytest.FixtureRequest):
    from support.kube_controller import KubeReleaseCluster

    if not _KUBE:
        root = request.getfixturevalue("tmp_path_factory").mktemp("kube-registry")
        cluster = KubeReleaseCluster(root)
        request.config.add_cleanup(cluster.stop)
        _KUBE.append(cluster)
    return _KUBE[0]


def _kubernetes(router: dict[str, Any]) -> Callable[[pytest.FixtureRequest], PlatformUnderTest]:
    """The Kubernetes driver with ``router``, against kmock's emulator and a test controller."""

    def factory(request: pytest.FixtureRequest) -> PlatformUnderTest:
        cluster = _kube_cluster(request)
        request.getfixturevalue("monkeypatch").setenv(
            "AIRFLOW_CONN_KUBERNETES_DEFAULT", cluster.kube.connection_json()
        )
        reset = cluster.reset
        if router["kind"] == "service-selector":
            from support.kube_bluegreen_objects import BlueGreenObjects

            reset = BlueGreenObjects(cluster).reset  # checkout-blue and its active / preview Services
        if router["kind"] == "replica-ratio":
            from support.kube_ratio_support import shared_service

            shared_service(cluster)  # the one Service in front of both tracks
        spec = cluster.spec(router)
        driver = driver_for(spec)
        driver.poll_interval = 0.05  # the emulated cluster settles in tenths of a second
        return PlatformUnderTest(
            name=f"kubernetes+{router['kind']}",
            driver=driver,
            router=router_for(spec),
            stable_image=cluster.image("1.0.0"),
            new_image=cluster.image("1.1.0"),
            other_image=cluster.image("1.2.0"),
            unpullable_image=cluster.image("9.9.9"),
            crashing_image=cluster.image("1.4.0-crash"),
            instances=cluster.replicas,
            reset=reset,
        )

    return factory


PLATFORMS: dict[str, Callable[[pytest.FixtureRequest], PlatformUnderTest]] = {
    "sandbox": _sandbox,
    "kubernetes+gateway-api": _kubernetes({"kind": "gateway-api", "http_route": "checkout"}),
    "kubernetes+nginx": _kubernetes({"kind": "nginx", "ingress": "checkout"}),
    "kubernetes+replica-ratio": _kubernetes(
        {"kind": "replica-ratio", "service": "checkout-shared", "max_canary_replicas": 4}
    ),
    "kubernetes+service-selector": _kubernetes(
        {
            "kind": "service-selector",
            "active_service": "checkout-active",
            "preview_service": "checkout-preview",
        }
    ),
}

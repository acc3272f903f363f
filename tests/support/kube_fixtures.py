"""The ``cluster`` and ``kube`` fixtures every Kubernetes test module uses, made by one factory.

``cluster`` (module scope) is a ``KubeReleaseCluster``, started once per module and checked for
controller errors when it stops; ``kube`` (per test) points ``kubernetes_default`` at it and
resets it before and after the test, clearing whatever faults the test injected. A module
assigns them: ``cluster, kube = kube_fixtures(replicas=4)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from support.kube_controller import KubeReleaseCluster


def kube_fixtures(
    *,
    replicas: int = 2,
    start_seconds: float | None = None,
    prepare: Callable[[KubeReleaseCluster], None] | None = None,
    reset: Callable[[KubeReleaseCluster], None] | None = None,
    reset_timeout: float = 20,
) -> tuple[Any, Any]:
    """The two fixtures. ``prepare``: extra objects once the cluster runs; ``reset``: how a test
    starts from the seeded state (default ``cluster.reset``)."""

    @pytest.fixture(scope="module")
    def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeReleaseCluster]:
        started = KubeReleaseCluster(tmp_path_factory.mktemp("kube-registry"), replicas=replicas)
        if start_seconds is not None:
            started.controller.start_seconds = start_seconds
        if prepare is not None:
            prepare(started)
        yield started
        started.stop()
        assert started.controller.errors == []

    def back_to_seeded(started: KubeReleaseCluster) -> None:
        if reset is not None:
            reset(started)
        else:
            started.reset(timeout=reset_timeout)

    @pytest.fixture
    def kube(cluster: KubeReleaseCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeReleaseCluster]:
        monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", cluster.kube.connection_json())
        back_to_seeded(cluster)
        yield cluster
        cluster.clear_faults()
        back_to_seeded(cluster)

    return cluster, kube

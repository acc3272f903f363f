"""Request metrics of the emulator's pods, for a real Prometheus to scrape.

In a cluster, each pod of a service exports ``http_requests_total`` and Prometheus'
``kubernetes_sd`` adds the pod's ``namespace`` and ``pod`` labels, which the Kubernetes
driver's ``$canary`` / ``$stable`` matchers select. Here the pods are only objects in
kmock's emulator, so ``PodRequestExporter`` answers for them: one HTTP exporter in the
test's process that, on every scrape, lists the namespace's pods and serves, for each
ready pod of the app, the counter ``http_requests_total{namespace, pod, status}`` as if
it had served ``requests_per_second`` since it became ready, a share ``error_ratio[image]``
of them ``500`` (the rest ``200``). The test sets the error ratio per image; the series
appear and vanish with the pods the controller makes and deletes.

Both statuses are always exported (``500`` at 0 for a healthy pod), as an app does that
counts its errors from the start, so a healthy canary's error rate is 0, not "no data".
``start_prometheus`` is the gate tests' (tests/integration/prom_fixtures.py), re-exported.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily

from support.kube_controller import CONTROLLER_AGENT, KubeEmulator

# Prometheus itself is started as the gate tests start it (tests/integration/prom_fixtures.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from prom_fixtures import start_prometheus

__all__ = ["PodRequestExporter", "start_prometheus"]


class PodRequestExporter:
    """``http_requests_total`` of the ready pods labelled ``app=<app>`` in ``namespace``; see the module.

    :param kube: the emulator holding the pods.
    :param namespace: the namespace whose pods are counted.
    :param app: the pods' ``app`` label.
    :param requests_per_second: each ready pod's request rate.
    """

    def __init__(
        self, kube: KubeEmulator, namespace: str, app: str, *, requests_per_second: float = 20.0
    ) -> None:
        self.namespace = namespace
        self.app = app
        self.requests_per_second = requests_per_second
        self.error_ratio: dict[str, float] = {}  # image -> share of its requests answered 500
        self._api = kube.core_v1(user_agent=CONTROLLER_AGENT).api_client  # never hit by injected faults
        self._ready_since: dict[str, float] = {}  # pod name -> when it was first seen ready
        self._lock = threading.Lock()
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)
        self._server: Any = None
        self.port = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> PodRequestExporter:
        self._server, _ = start_http_server(0, addr="127.0.0.1", registry=self._registry)
        self.port = self._server.server_port
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def collect(self) -> Iterator[CounterMetricFamily]:
        """Called by prometheus_client on every scrape."""
        family = CounterMetricFamily(
            "http_requests_total", "HTTP requests served, by status", labels=["namespace", "pod", "status"]
        )
        now = time.monotonic()
        with self._lock:
            pods = self._ready_pods()
            for gone in set(self._ready_since) - set(pods):
                del self._ready_since[gone]
            for name, image in sorted(pods.items()):
                since = self._ready_since.setdefault(name, now)
                total = self.requests_per_second * (now - since)
                errors = total * self.error_ratio.get(image, 0.0)
                family.add_metric([self.namespace, name, "200"], total - errors)
                family.add_metric([self.namespace, name, "500"], errors)
        yield family

    def _ready_pods(self) -> dict[str, str]:
        """Pod name -> the image of its first container, for the app's ready pods."""
        try:
            response = self._api.call_api(
                f"/api/v1/namespaces/{self.namespace}/pods",
                "GET",
                header_params={"Accept": "application/json"},
                _preload_content=False,
                _return_http_data_only=True,
            )
        except ApiException:
            return {}  # a failed scrape shows as a gap, as a pod that cannot be reached would
        ready = {}
        for pod in json.loads(response.data).get("items") or []:
            meta, status = pod["metadata"], pod.get("status") or {}
            if (meta.get("labels") or {}).get("app") != self.app or meta.get("deletionTimestamp"):
                continue
            if any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
            ):
                ready[meta["name"]] = pod["spec"]["containers"][0].get("image", "")
        return ready

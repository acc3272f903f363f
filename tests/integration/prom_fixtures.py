"""A real Prometheus for tests, and a tiny exporter whose gauges the test sets.

``start_prometheus`` runs Debian's ``/usr/bin/prometheus`` on a free loopback port with
its own configuration and data in a directory of the caller's, scraping every second;
``GaugeExporter`` serves gauges labelled ``track="canary"|"stable"`` from the test
process (prometheus_client on a free port). Together they make a gate's verdict depend
on real PromQL over really scraped samples, with values the test chooses.

Nothing here sleeps a fixed time: every wait polls a condition until a deadline.
"""

from __future__ import annotations

import contextlib
import crypt  # deprecated (removed in 3.13) but the simplest bcrypt here; only for basic-auth tests
import json
import math
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Gauge, start_http_server

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
SCRAPE_INTERVAL = "1s"


def free_port() -> int:
    """A loopback port free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], Any], *, timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()  # never set: wait() is a pause between polls, not a fixed sleep
    last_error: BaseException | None = None
    while True:
        try:
            result = condition()
        except Exception as exc:  # a condition that cannot be checked yet is just not true yet
            result, last_error = None, exc
        if result:
            return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}{detail}")
        pause.wait(every)


@dataclass
class PrometheusProcess:
    """A running Prometheus: its URL, port, directory and process."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes]
    auth: tuple[str, str] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connection(self) -> dict[str, Any]:
        """The Airflow connection (JSON form of ``AIRFLOW_CONN_...``) that reaches this server."""
        conn: dict[str, Any] = {"conn_type": "http", "host": "127.0.0.1", "port": self.port}
        if self.auth:
            conn |= {"login": self.auth[0], "password": self.auth[1]}
        return conn

    def connection_env(self) -> str:
        return json.dumps(self.connection())

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The raw instant-vector result (for tests' own waits; gates go through the hook)."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, auth=self.auth, timeout=5)
        response.raise_for_status()
        return response.json()["data"]["result"]

    def wait_for_value(self, promql: str, expected: float, *, timeout: float = 20) -> None:
        """Wait until ``promql`` evaluates to ``expected`` (e.g. after setting a gauge)."""

        def seen() -> bool:
            result = self.query(promql)
            if len(result) != 1:
                return False
            value = float(result[0]["value"][1])
            return math.isclose(value, expected, rel_tol=1e-9, abs_tol=1e-12)

        wait_until(seen, timeout=timeout, what=f"{promql} == {expected} in Prometheus")

    def wait_for_targets(self, count: int, *, timeout: float = 20) -> None:
        """Wait until ``count`` scrape targets are up (``up == 1``)."""
        wait_until(lambda: len(self.query("up == 1")) >= count, timeout=timeout, what=f"{count} targets up")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def log_tail(self, lines: int = 20) -> str:
        log = self.directory / "prometheus.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def start_prometheus(
    directory: Path,
    targets: Iterable[str],
    *,
    basic_auth: tuple[str, str] | None = None,
    timeout: float = 30,
) -> PrometheusProcess:
    """Start Prometheus in ``directory`` scraping ``targets`` (``host:port``) every second.

    With ``basic_auth`` (user, password), its API requires those credentials.
    Returns once it is ready to answer queries; the caller stops it (``.stop()``).
    """
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": "900ms",
            "evaluation_interval": "1s",
        },
        "scrape_configs": [{"job_name": "test", "static_configs": [{"targets": list(targets)}]}],
    }
    (directory / "prometheus.yml").write_text(json.dumps(config, indent=2))  # JSON is YAML
    command = [
        PROMETHEUS,
        f"--config.file={directory / 'prometheus.yml'}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    if basic_auth:
        user, password = basic_auth
        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))  # cheap cost 4
        (directory / "web.yml").write_text(json.dumps({"basic_auth_users": {user: hashed}}))
        command.append(f"--web.config.file={directory / 'web.yml'}")
    log = (directory / "prometheus.log").open("ab")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    server = PrometheusProcess(port=port, directory=directory, process=process, auth=basic_auth)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode}:\n{server.log_tail()}")
        return httpx.get(f"{server.url}/-/ready", auth=basic_auth, timeout=2).status_code == 200

    try:
        wait_until(ready, timeout=timeout, what=f"Prometheus ready on port {port}")
    except BaseException:
        server.stop()
        raise
    return server


class GaugeExporter:
    """Gauges with a ``track`` label served over HTTP from the test process, for Prometheus to scrape.

    ``exporter.set("opsdag_test_error_ratio", canary=0.081, stable=0.004)``; a value of
    ``None`` removes that track's series, so the query sees no data.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.gauges = {
            name: Gauge(name, f"test gauge {name}", ["track"], registry=self.registry) for name in names
        }
        self._server: Any = None
        self.port = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> GaugeExporter:
        self._server, _ = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.port = self._server.server_port
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def set(self, name: str, **tracks: float | None) -> None:
        gauge = self.gauges[name]
        for track, value in tracks.items():
            if value is None:
                with contextlib.suppress(KeyError):
                    gauge.remove(track)
            else:
                gauge.labels(track=track).set(value)

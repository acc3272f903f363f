"""The sandbox's demo service: a tiny HTTP app whose versions can carry faults.

Run as ``python -m opsdag.dev.sandbox.demo_app --port N --version TAG [faults]``. It answers
``/`` with its version (``X-Version`` header and a small JSON body), ``/healthz`` for
HAProxy's checks and ``/metrics`` for Prometheus. Faults (``--error-rate``,
``--extra-latency-ms``, ``--crash-on-start``, ``--fault-after-s``) make bad releases
measurable for real. It imports neither Airflow nor anything heavy, so a fleet of them
starts in a fraction of a second.

Metrics (labels ``track``/``version``/``deployment`` are added by Prometheus from the
file_sd target labels, not by the app):

- ``opsdag_demo_http_requests_total{code}``: requests served (not /healthz, /metrics)
- ``opsdag_demo_http_request_duration_seconds``: their latency (histogram)
- ``opsdag_demo_build_info{app_version}``: always 1
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

REQUESTS_METRIC = "opsdag_demo_http_requests_total"
LATENCY_METRIC = "opsdag_demo_http_request_duration_seconds"
BUILD_INFO_METRIC = "opsdag_demo_build_info"
CRASH_EXIT_CODE = 3
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0)
_INTERNAL_PATHS = {"/healthz", "/metrics"}


class DemoApp:
    """Request handling state shared by the server's threads: version, faults and metrics."""

    def __init__(
        self,
        version: str,
        instance: str = "",
        error_rate: float = 0.0,
        extra_latency_ms: int = 0,
        fault_after_s: float = 0.0,
    ) -> None:
        self.version = version
        self.instance = instance
        self.error_rate = error_rate
        self.extra_latency_ms = extra_latency_ms
        self.fault_after_s = fault_after_s
        self.started = time.monotonic()
        self._random = random.Random()
        self._random_lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=True)
        # prometheus_client appends _total to counters itself.
        self.requests = Counter(
            REQUESTS_METRIC.removesuffix("_total"),
            "Requests served by the demo app, by HTTP status code.",
            ["code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            LATENCY_METRIC,
            "Latency of requests served by the demo app.",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        info = Gauge(
            BUILD_INFO_METRIC, "Version of the running demo app.", ["app_version"], registry=self.registry
        )
        info.labels(app_version=version).set(1)
        for code in ("200", "500"):
            self.requests.labels(code=code)  # export zeros so rate() works from the first scrape

    def faults_active(self) -> bool:
        return time.monotonic() - self.started >= self.fault_after_s

    def should_fail(self) -> bool:
        if not self.error_rate or not self.faults_active():
            return False
        with self._random_lock:
            return self._random.random() < self.error_rate


class _Handler(BaseHTTPRequestHandler):
    server_version = "opsdag-demo"
    app: DemoApp  # set on the subclass made by make_server()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(200, b"ok\n", "text/plain")
        elif path == "/metrics":
            self._send(200, generate_latest(self.app.registry), CONTENT_TYPE_LATEST)
        else:
            self._serve_app()

    def _serve_app(self) -> None:
        app = self.app
        start = time.perf_counter()
        if app.extra_latency_ms and app.faults_active():
            time.sleep(app.extra_latency_ms / 1000)
        code = 500 if app.should_fail() else 200
        body = {"service": "demo-api", "version": app.version, "instance": app.instance}
        if code != 200:
            body["error"] = "injected fault"
        self._send(code, (json.dumps(body) + "\n").encode(), "application/json")
        app.requests.labels(code=str(code)).inc()
        app.latency.observe(time.perf_counter() - start)

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Version", self.app.version)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Silence per-request logs: at 50 req/s they would fill the log for nothing."""


class _Server(ThreadingHTTPServer):
    # socketserver's default backlog of 5 is short for a slow version under load.
    request_queue_size = 128
    # Join request threads on close so a stop lets in-flight requests finish.
    daemon_threads = False


def make_server(app: DemoApp, host: str, port: int) -> ThreadingHTTPServer:
    handler = type("DemoHandler", (_Handler,), {"app": app})
    return _Server((host, port), handler)


def serve(app: DemoApp, host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting and finish in-flight requests."""
    server = make_server(app, host, port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    print(f"demo-api {app.version} serving on http://{host}:{server.server_port}", flush=True)
    stop.wait()
    server.shutdown()
    server.server_close()
    print(f"demo-api {app.version} stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m opsdag.dev.sandbox.demo_app", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--instance", default="")
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--extra-latency-ms", type=int, default=0)
    parser.add_argument("--fault-after-s", type=float, default=0.0)
    parser.add_argument("--crash-on-start", action="store_true")
    args = parser.parse_args(argv)
    if args.crash_on_start:
        print(
            f"demo-api {args.version}: fatal: crash_on_start fault, exiting with status {CRASH_EXIT_CODE}",
            file=sys.stderr,
            flush=True,
        )
        return CRASH_EXIT_CODE
    app = DemoApp(args.version, args.instance, args.error_rate, args.extra_latency_ms, args.fault_after_s)
    serve(app, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Prometheus for the sandbox: its configuration and the file_sd targets of the demo fleet.

Prometheus scrapes every second. The demo apps are found through ``file_sd_configs``: the
platform driver rewrites one JSON file whenever processes come or go, and Prometheus
picks it up (it watches the file) without a restart. Each target carries the labels
analysis queries select on: ``track`` (stable|canary), ``version``, ``deployment`` (a
fresh id per canary deployment, so a new canary never inherits an old one's series),
``slot`` and ``service``.

Prometheus also evaluates the alerting rules shipped in ``include/alerts/*.yaml`` (and any
in ``<sandbox>/prometheus/rules/*.yaml``, a place for a sandbox's own) every second and
sends what fires to the sandbox's Alertmanager (``alertmanager_server``). HAProxy's
target is labelled with the ``service`` it fronts and PostgreSQL's exporter
(``prometheus-postgres-exporter``) with the database's spec name as ``service``, the
label the rules and runbooks act on.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opsdag.dev.sandbox.processes import atomic_write

SCRAPE_INTERVAL = "1s"
SCRAPE_TIMEOUT = "900ms"
HAPROXY_JOB = "haproxy"
POSTGRES_JOB = "postgres"
ALERT_RESEND_DELAY = "5s"


@dataclass(frozen=True)
class AppTarget:
    """One demo-app process as Prometheus should see it."""

    port: int
    track: str
    version: str
    deployment: str
    slot: str


def render_config(
    *,
    app_job: str,
    haproxy_stats_port: int,
    targets_dir: Path,
    rule_files: Sequence[str | Path] = (),
    alertmanager_port: int | None = None,
    postgres_exporter_port: int | None = None,
    database_service: str | None = None,
) -> str:
    """prometheus.yml: HAProxy's exporter (static, labelled ``service``: ``app_job``), the demo
    apps (file_sd), PostgreSQL's exporter when it runs, the rule files and the Alertmanager."""
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_TIMEOUT,
            "evaluation_interval": SCRAPE_INTERVAL,
        },
        "scrape_configs": [
            {
                "job_name": HAPROXY_JOB,
                "static_configs": [
                    {"targets": [f"127.0.0.1:{haproxy_stats_port}"], "labels": {"service": app_job}}
                ],
            },
            {
                "job_name": app_job,
                "file_sd_configs": [{"files": [str(targets_dir / "*.json")], "refresh_interval": "1s"}],
            },
        ],
    }
    if postgres_exporter_port is not None:
        labels = {"service": database_service} if database_service else {}
        config["scrape_configs"].append(
            {
                "job_name": POSTGRES_JOB,
                "static_configs": [{"targets": [f"127.0.0.1:{postgres_exporter_port}"], "labels": labels}],
            }
        )
    if rule_files:
        config["rule_files"] = [str(path) for path in rule_files]
    if alertmanager_port is not None:
        config["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]
        }
    # JSON is valid YAML; it keeps this module free of a YAML dependency.
    return json.dumps(config, indent=2) + "\n"


def write_targets(path: Path, service: str, targets: Sequence[AppTarget]) -> None:
    """Replace the file_sd file with ``targets`` (atomically: Prometheus never reads half)."""
    groups = [
        {
            "targets": [f"127.0.0.1:{t.port}"],
            "labels": {
                "service": service,
                "track": t.track,
                "version": t.version,
                "deployment": t.deployment,
                "slot": t.slot,
            },
        }
        for t in targets
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(groups, indent=2) + "\n")


def command(*, binary: str, config: Path, data_dir: Path, port: int, retention: str = "1d") -> list[str]:
    return [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir}",
        f"--storage.tsdb.retention.time={retention}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.external-url=http://127.0.0.1:{port}/",  # alerts' generatorURL (else the host name)
        "--web.enable-lifecycle",
        # Firing (and resolved) alerts are re-sent this often, not every minute: an alert
        # evaluated while the Alertmanager is not discovered yet (just after a start or a
        # reload) is dropped, and would otherwise wait a minute for its next send.
        f"--rules.alert.resend-delay={ALERT_RESEND_DELAY}",
        "--log.level=warn",
    ]


class PrometheusClient:
    """Just enough of Prometheus's HTTP API for the sandbox and its tests."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=self.timeout) as resp:
            return json.loads(resp.read())

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=self.timeout) as resp:
                return resp.status == 200
        except OSError:
            return False

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; returns the ``result`` list (each with ``metric`` and ``value``)."""
        body = self._get("/api/v1/query", {"query": promql})
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus query {promql!r} failed: {body.get('error')}")
        return body["data"]["result"]

    def active_targets(self) -> list[dict[str, Any]]:
        return self._get("/api/v1/targets", {"state": "active"})["data"]["activeTargets"]


def reload(url: str, timeout: float = 10.0) -> None:
    """Ask Prometheus to re-read its configuration (needs ``--web.enable-lifecycle``)."""
    request = urllib.request.Request(f"{url.rstrip('/')}/-/reload", method="POST")
    with urllib.request.urlopen(request, timeout=timeout):
        pass

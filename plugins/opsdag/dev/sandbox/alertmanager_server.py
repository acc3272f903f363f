"""Alertmanager for the sandbox: its configuration, a small client, and where it posts alerts.

The sandbox's Prometheus evaluates the rules shipped in ``include/alerts/*.yaml`` and sends
what fires here; Alertmanager (Debian's ``prometheus-alertmanager``) groups the alerts and
posts them, as webhook payloads of version 4, to opsdag's endpoint ``<airflow>/opsdag/alerts``
with the sandbox's bearer token read from ``<sandbox>/alerts/webhook-token``
(``credentials_file``: the token is never in the configuration). Grouping is short for the
sandbox (``group_wait`` 2 s, ``group_interval`` 10 s) and resolved alerts are sent too.

Airflow starts after the sandbox, so until ``point_alerts_at(layout, url)`` names it the
receiver points at a loopback port nobody listens on (``NOWHERE_URL``): alerts go nowhere
and the status says so. ``point_alerts_at`` rewrites the configuration and has a running
Alertmanager re-read it (``POST /-/reload``); ``python -m opsdag.sandbox alerts-to URL`` is
the same from the command line, and ``opsdag.dev.standalone`` calls it once Airflow is up.
HA clustering is off (``--cluster.listen-address=``): one instance, no gossip port.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from opsdag.dev.sandbox.connections import alerts_token, alerts_token_file
from opsdag.dev.sandbox.processes import (
    ProcessTable,
    atomic_write,
    free_port,
    log_tail,
    port_free,
    wait_until,
)
from opsdag.dev.sandbox.starters import timed
from opsdag.dev.sandbox.state import Layout, Progress, SandboxError, load_state, locked, save_state

ALERTMANAGER_BIN = "/usr/bin/prometheus-alertmanager"
ALERTS_PATH = "/opsdag/alerts"
# Port 9 (discard): nothing listens on it here, so a post is refused at once.
NOWHERE_URL = f"http://127.0.0.1:9{ALERTS_PATH}"
RECEIVER = "opsdag"
GROUP_WAIT = "2s"
GROUP_INTERVAL = "10s"
REPEAT_INTERVAL = "1h"


def alertmanager_dir(layout: Layout) -> Path:
    return layout.root / "alertmanager"


def config_path(layout: Layout) -> Path:
    return alertmanager_dir(layout) / "alertmanager.yml"


def data_dir(layout: Layout) -> Path:
    return alertmanager_dir(layout) / "data"


def webhook_url(airflow_url: str) -> str:
    """``<airflow>/opsdag/alerts`` from Airflow's base URL (a URL already ending so is kept)."""
    url = airflow_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise SandboxError(f"alerts-to: {airflow_url!r} is not an http(s) URL of Airflow's API server")
    return url if url.endswith(ALERTS_PATH) else url + ALERTS_PATH


def render_config(*, url: str, token_file: Path) -> str:
    """alertmanager.yml: every alert to one webhook receiver, grouped by alert name and service."""
    config = {
        "route": {
            "receiver": RECEIVER,
            "group_by": ["alertname", "service"],
            "group_wait": GROUP_WAIT,
            "group_interval": GROUP_INTERVAL,
            "repeat_interval": REPEAT_INTERVAL,
        },
        "receivers": [
            {
                "name": RECEIVER,
                "webhook_configs": [
                    {
                        "url": url,
                        "send_resolved": True,
                        "max_alerts": 0,
                        "http_config": {
                            "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                        },
                    }
                ],
            }
        ],
    }
    # JSON is valid YAML; it keeps this module free of a YAML dependency.
    return json.dumps(config, indent=2) + "\n"


def command(*, binary: str, config: Path, data: Path, port: int) -> list[str]:
    return [
        binary,
        f"--config.file={config}",
        f"--storage.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.external-url=http://127.0.0.1:{port}/",  # the payloads' externalURL
        "--cluster.listen-address=",  # no HA peer: no gossip port
        "--log.level=warn",
    ]


class AlertmanagerClient:
    """Just enough of Alertmanager's HTTP API for the sandbox and its tests."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=self.timeout) as resp:
                return resp.status == 200
        except OSError:
            return False

    def reload(self) -> None:
        """Re-read the configuration; Alertmanager answers 500 with the reason when it is refused."""
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout):
                pass
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace").strip()
            raise SandboxError(f"Alertmanager at {self.url} refused its new configuration: {detail}") from exc
        except OSError as exc:
            raise SandboxError(f"Alertmanager at {self.url} unreachable for reload: {exc}") from exc

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds (``GET /api/v2/alerts``)."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=self.timeout) as resp:
            return json.loads(resp.read())


def write_config(layout: Layout, url: str) -> bool:
    """Write alertmanager.yml posting to ``url``; True when it changed. Makes the token file."""
    alerts_token(layout)  # the credentials_file must exist before Alertmanager reads the config
    text = render_config(url=url, token_file=alerts_token_file(layout))
    path = config_path(layout)
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)
    return True


def point_alerts_at(layout: Layout, airflow_url: str | None) -> str:
    """Make the sandbox's Alertmanager post to ``<airflow_url>/opsdag/alerts`` (None: nowhere).

    Rewrites the configuration, records the URL in the state and, when Alertmanager runs,
    has it re-read the configuration. Returns the webhook URL now in force.
    """
    url = webhook_url(airflow_url) if airflow_url else NOWHERE_URL
    with locked(layout):
        state = load_state(layout)
        if state is None:
            raise SandboxError(f"no sandbox in {layout.root}: run `python -m opsdag.sandbox up` first")
        info = state.setdefault("alertmanager", {})
        info["webhook_url"] = url
        changed = write_config(layout, url)
        save_state(layout, state)
        record = layout.processes().read("alertmanager")
        if changed and record is not None and layout.processes().alive(record) and info.get("url"):
            AlertmanagerClient(info["url"]).reload()
    return url


def start_alertmanager(
    layout: Layout, state: dict[str, Any], procs: ProcessTable, progress: Progress
) -> None:
    """Alertmanager unless it runs (kept, its configuration re-read if it changed); the caller
    holds the sandbox lock and saves the state."""
    info = state.setdefault("alertmanager", {})
    url = info.setdefault("webhook_url", NOWHERE_URL)
    changed = write_config(layout, url)
    record = procs.read("alertmanager")
    if record is not None and procs.alive(record) and AlertmanagerClient(info.get("url", "")).ready():
        if changed:
            AlertmanagerClient(info["url"]).reload()
        progress(f"alertmanager already running at {info['url']}")
        return
    if record is not None:
        procs.stop(record)
    done = timed(progress, "starting alertmanager")
    data_dir(layout).mkdir(parents=True, exist_ok=True)
    if shutil.which("amtool"):
        proc = subprocess.run(
            ["amtool", "check-config", str(config_path(layout))], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise SandboxError(f"alertmanager configuration rejected: {(proc.stdout + proc.stderr).strip()}")
    previous = info.get("port")
    info["port"] = previous if previous and port_free(previous) else free_port()
    info["url"] = f"http://127.0.0.1:{info['port']}"
    argv = command(
        binary=ALERTMANAGER_BIN, config=config_path(layout), data=data_dir(layout), port=info["port"]
    )
    record = procs.spawn("alertmanager", argv, cwd=alertmanager_dir(layout))
    client = AlertmanagerClient(info["url"])
    if not wait_until(lambda: client.ready() or not procs.alive(record), 30, 0.1) or not procs.alive(record):
        raise SandboxError(
            f"alertmanager did not become ready; see {record.log}:\n{log_tail(record.log, 20)}"
        )
    info["pid"] = record.pid
    done(f"{info['url']}, posting to {url}" + (" (nowhere yet)" if url == NOWHERE_URL else ""))

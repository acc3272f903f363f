"""The Airflow connections to the sandbox's servers, published in ``connections.json``."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from opsdag.dev.sandbox.demo_database import DEMO_DATABASE, postgres_server
from opsdag.dev.sandbox.image_registry import registry_of
from opsdag.dev.sandbox.processes import atomic_write
from opsdag.dev.sandbox.state import Layout


def write_connections(layout: Layout, state: dict[str, Any]) -> None:
    """Publish Airflow connections to the sandbox's servers in ``connections.json`` (0600).

    ``opsdag.dev.airflow_env`` exports them as ``AIRFLOW_CONN_*`` variables: Prometheus
    (``prometheus_default``), the demo database (``postgres_demo``) and the same server as
    the DR-drill target (``postgres_drill``, marked ``opsdag_drill_target``), the token
    Alertmanager sends to ``/opsdag/alerts`` (``opsdag_alerts``), and ``docker_default``:
    the image registry's login (``host`` ``127.0.0.1:<port>``, as the docker provider's
    ``DockerHook`` logs in) with the engine's address in ``extra.docker_url``
    (``unix:///.../docker.sock``). The file holds the PostgreSQL and registry passwords,
    like ``postgres/password`` and ``registry/password``; ``down`` removes it.
    """
    pg = state["postgres"]
    server = postgres_server(layout)
    postgres = {
        "conn_type": "postgres",
        "host": pg["host"],
        "port": pg["port"],
        "login": pg["user"],
        "password": server.password,
    }
    connections = {
        "opsdag_alerts": {"conn_type": "generic", "password": alerts_token(layout)},
        "prometheus_default": {"conn_type": "http", "host": "127.0.0.1", "port": state["prometheus"]["port"]},
        "postgres_demo": {**postgres, "schema": DEMO_DATABASE},
        "postgres_drill": {**postgres, "schema": "postgres", "extra": {"opsdag_drill_target": True}},
    }
    if state.get("registry") and state.get("docker"):
        connections["docker_default"] = registry_of(layout, state).docker_connection(state["docker"]["url"])
    atomic_write(layout.connections_file, json.dumps(connections, indent=2) + "\n", mode=0o600)


def alerts_token_file(layout: Layout) -> Path:
    """The bearer token of ``/opsdag/alerts`` (0600): Alertmanager's ``credentials_file``."""
    return layout.root / "alerts" / "webhook-token"


def alerts_token(layout: Layout) -> str:
    """The sandbox's webhook token, made once (kept across ``down``/``up``)."""
    path = alerts_token_file(layout)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, secrets.token_urlsafe(32) + "\n", mode=0o600)
    return path.read_text().strip()

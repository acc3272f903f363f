"""PostgreSQL's Prometheus exporter for the sandbox (Debian's ``prometheus-postgres-exporter``).

It gives the rule ``DatabaseConnectionsExhausted`` (``include/alerts/databases.yaml``) its
metrics: ``pg_stat_activity_count{datname,state}`` and ``pg_settings_max_connections``.
It connects as the sandbox's PostgreSQL user with the password read from the server's
password file (``DATA_SOURCE_PASS_FILE``): no password on its command line or in its
environment. Prometheus scrapes it as the job ``postgres``, labelled ``service`` with the
demo database's spec name (``DATABASE_SERVICE``).
"""

from __future__ import annotations

import os
import urllib.request
from typing import Any

from opsdag.dev.sandbox.demo_database import postgres_server
from opsdag.dev.sandbox.processes import ProcessTable, free_port, log_tail, port_free, wait_until
from opsdag.dev.sandbox.starters import timed
from opsdag.dev.sandbox.state import Layout, Progress, SandboxError

EXPORTER_BIN = "/usr/bin/prometheus-postgres-exporter"
# include/databases/demo-db.yaml: the database the sandbox's PostgreSQL holds.
DATABASE_SERVICE = "demo-db"


def exporter_ready(url: str, timeout: float = 5.0) -> bool:
    """The exporter answers and reaches PostgreSQL (``pg_up 1``)."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=timeout) as resp:
            return any(line.strip() == "pg_up 1" for line in resp.read().decode().splitlines())
    except OSError:
        return False


def start_postgres_exporter(
    layout: Layout, state: dict[str, Any], procs: ProcessTable, progress: Progress
) -> None:
    """The exporter unless it runs; the caller holds the sandbox lock and saves the state."""
    info = state.setdefault("postgres_exporter", {})
    record = procs.read("postgres-exporter")
    if record is not None and procs.alive(record) and exporter_ready(info.get("url", "")):
        progress(f"postgres exporter already running at {info['url']}")
        return
    if record is not None:
        procs.stop(record)
    done = timed(progress, "starting the postgres exporter")
    server = postgres_server(layout)
    previous = info.get("port")
    info["port"] = previous if previous and port_free(previous) else free_port()
    info["url"] = f"http://127.0.0.1:{info['port']}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DATA_SOURCE_URI": f"127.0.0.1:{server.port}/postgres?sslmode=disable",
        "DATA_SOURCE_USER": state["postgres"]["user"],
        "DATA_SOURCE_PASS_FILE": str(server.password_file),
    }
    argv = [EXPORTER_BIN, f"--web.listen-address=127.0.0.1:{info['port']}", "--log.level=warn"]
    record = procs.spawn("postgres-exporter", argv, env=env, cwd=layout.root)
    answered = wait_until(lambda: exporter_ready(info["url"]) or not procs.alive(record), 30, 0.2)
    if not answered or not procs.alive(record):
        raise SandboxError(
            f"the postgres exporter did not reach PostgreSQL; see {record.log}:\n{log_tail(record.log, 20)}"
        )
    info["pid"] = record.pid
    info["service"] = DATABASE_SERVICE
    done(info["url"])

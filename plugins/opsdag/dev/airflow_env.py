"""The environment Airflow runs with in this project (scripts/airflow, tests, the demo).

One place decides AIRFLOW_HOME, the dags/ and plugins/ folders and the sandbox's
connections, so the CLI, the tests and people all run Airflow the same way. Connections
are passed as ``AIRFLOW_CONN_*`` variables (JSON) read from the sandbox's
``connections.json`` when it is up; they never appear on a command line.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

from opsdag import paths

# SQLite's default wait for a lock is 5 s; standalone's scheduler, triggerer, API server and
# workers all write to one file, so a busy 2-core machine needs longer before "locked".
SQLITE_CONNECT_ARGS = {"timeout": 60}


def airflow_environment(extra_connections: dict[str, dict] | None = None) -> dict[str, str]:
    root = paths.project_root()
    home = paths.state_dir() / "airflow"
    env = {
        "OPSDAG_HOME": str(root),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "30",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "opsdag.dev.airflow_env.SQLITE_CONNECT_ARGS",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        # Airflow 3.3.2 can fail a task as it resumes from its trigger when the worker's first
        # heartbeat races the scheduler (apache/airflow#67287); a 1 s floor between heartbeats
        # made it go away in bench/results/release_min_heartbeat_1s.json.
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        # An idle scheduler sleeps this long between loops (Airflow's default: 1 s), and a task's
        # downstream waits for the next loop: with 16 tasks in a 4-step canary that was ~8 s of a
        # release; at 0.1 s the gaps were 0.07-0.14 s, for ~12 % of a core per idle scheduler.
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.1",
        "PYTHONPATH": os.pathsep.join(p for p in (str(root / "plugins"), os.environ.get("PYTHONPATH")) if p),
    }
    connections = sandbox_connections()
    connections.update(extra_connections or {})
    for conn_id, conn in connections.items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)
    return env


def sandbox_connections() -> dict[str, dict]:
    """Connections the running sandbox published in its ``connections.json`` (empty when it is down).

    ``prometheus_default`` (its Prometheus), ``postgres_demo`` (the demo database) and
    ``postgres_drill`` (the same server, marked as a drill target).
    """
    try:
        return json.loads((paths.sandbox_dir() / "connections.json").read_text())
    except (OSError, ValueError):
        return {}


def main() -> None:
    """Print ``export`` lines for a shell to eval (used by scripts/airflow)."""
    env = airflow_environment()
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    for key, value in env.items():
        if key.startswith("AIRFLOW_CONN_") and key in os.environ:
            continue  # a connection set by the caller wins over the sandbox's
        sys.stdout.write(f"export {key}={shlex.quote(value)}\n")

"""The settings every cluster process runs with, and what must exist before they start.

Secrets never reach a command line or the environment: the metadata database URL (with its
password), the broker URL, the Fernet key and the API's signing keys are generated into 0600
files and read by Airflow through its ``*_CMD`` settings; connections are imported into the
metadata database (Fernet-encrypted) from a 0600 file removed at once.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from opsdag import paths
from opsdag.dev.airflow_env import airflow_environment, sandbox_connections
from opsdag.dev.cluster import topology
from opsdag.dev.cluster.layout import (
    DATABASE,
    USER,
    credentials_path,
    home,
    postgres,
    redis,
    running,
)
from opsdag.dev.sandbox.processes import atomic_write, free_port


def _secret(name: str, make: Callable[[], str], *, keep: bool = True) -> Path:
    """A 0600 file holding one secret: generated once (``keep``), or rewritten each time (URLs,
    whose ports change when the servers restart)."""
    path = home() / "secrets" / name
    if not (keep and path.exists()):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(path, make(), mode=0o600)
    return path


def ports() -> dict[str, Any]:
    """Ports of the running cluster, or new free ones when nothing of it runs."""
    state = home() / "cluster.json"
    if state.exists() and any(running(c.name) for c in topology.COMPONENTS):
        return json.loads(state.read_text())
    ports = {"api": free_port(), "components": {}}
    for item in topology.COMPONENTS:
        ports["components"][item.name] = {setting: free_port() for setting in item.ports}
    atomic_write(state, json.dumps(ports, indent=2))
    return ports


def environment(ports: dict[str, Any]) -> dict[str, str]:
    """What every component runs with: scripts/airflow's settings, the Celery layout, secrets by file."""
    pg, broker = postgres(), redis()
    url = f"http://127.0.0.1:{ports['api']}"
    db = f"postgresql+psycopg2://{pg.superuser}:{quote(pg.password, safe='')}@127.0.0.1:{pg.port}/{DATABASE}"
    result_backend = "db+" + db.replace("+psycopg2", "")
    files = {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": _secret("sql_alchemy_conn", lambda: db, keep=False),
        "AIRFLOW__CELERY__RESULT_BACKEND": _secret("result_backend", lambda: result_backend, keep=False),
        "AIRFLOW__CELERY__BROKER_URL": _secret("broker_url", broker.url, keep=False),
        "AIRFLOW__CORE__FERNET_KEY": _secret("fernet_key", _fernet_key),
        "AIRFLOW__API__SECRET_KEY": _secret("api_secret_key", lambda: secrets.token_urlsafe(32)),
        "AIRFLOW__API_AUTH__JWT_SECRET": _secret("jwt_secret", lambda: secrets.token_urlsafe(32)),
    }
    # Connections go to the metadata database (Fernet-encrypted), not to the environment
    # (see _import_connections); the caller's own AIRFLOW_CONN_* pass through.
    env = {
        **{k: v for k, v in airflow_environment().items() if not k.startswith("AIRFLOW_CONN_")},
        **os.environ,
    }
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS", None)  # SQLite's lock wait
    for setting in topology.SECRET_SETTINGS:
        env.pop(setting, None)
        env[f"{setting}_CMD"] = f"cat {files[setting]}"
    airflow_home = home() / "airflow"
    env.update(
        {
            **topology.SHARED_SETTINGS,
            **topology.CLUSTER_ONLY_SETTINGS,
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(airflow_home / "logs"),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(ports["api"]),
            "AIRFLOW__API__BASE_URL": url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(
                home() / "simple_auth_manager_passwords.json"
            ),
        }
    )
    venv_bin = paths.project_root() / ".venv" / "bin"
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    return env


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def airflow() -> str:
    return str(paths.project_root() / ".venv" / "bin" / "airflow")


def migrate(env: dict[str, str], progress: Callable[[str], None]) -> None:
    marker = home() / "airflow" / "migrated"
    if marker.exists():
        return
    progress("  migrating the metadata database (airflow db migrate) ...")
    (home() / "airflow").mkdir(parents=True, exist_ok=True)
    done = subprocess.run([airflow(), "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    marker.write_text("done\n")


def import_connections(env: dict[str, str], ports: dict[str, Any], progress: Callable[[str], None]) -> None:
    """The sandbox's connections and ``airflow_api`` (run notes) into the metadata database.

    Through a 0600 file removed at once: a connection's password never reaches a command
    line or a process's environment.
    """
    password = json.loads(credentials_path().read_text())["password"]
    api = {
        "conn_type": "http",
        "host": "127.0.0.1",
        "port": ports["api"],
        "login": USER,
        "password": password,
    }
    connections = {**sandbox_connections(), "airflow_api": api}
    progress(f"  connections into the metadata database: {', '.join(sorted(connections))}")
    path = home() / "secrets" / "connections.json"
    atomic_write(path, json.dumps(connections), mode=0o600)
    try:
        done = subprocess.run(
            [airflow(), "connections", "import", "--overwrite", str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        path.unlink(missing_ok=True)
    if done.returncode != 0:
        raise RuntimeError(f"airflow connections import failed:\n{done.stdout[-1500:]}{done.stderr[-1500:]}")

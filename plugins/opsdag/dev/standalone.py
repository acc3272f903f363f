"""Run ``airflow standalone`` for the demo and the REST tests: start, wait until healthy, stop.

Every setting it needs is set here, from :mod:`opsdag.dev.airflow_env`: a free API port with
the execution API URL on that same port (without it, tasks never start), the simple auth
manager with an ``admin`` user whose generated password is kept in a 0600 file, DAGs
unpaused at creation, and an ``airflow_api`` connection so release reports can set the
run's note. The process runs in its own session; ``stop`` ends its whole process group
by PID (scheduler, dag-processor, triggerer, api-server and their task workers).

Once Airflow answers, a sandbox running in the default state directory has its Alertmanager
post to this Airflow's ``/opsdag/alerts`` (``point_alerts_at``); ``stop`` points it nowhere.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from opsdag import paths
from opsdag.airflow_api import Credentials, credentials_file
from opsdag.dev.airflow_env import airflow_environment
from opsdag.dev.airflow_health import Progress, healthy
from opsdag.dev.sandbox.processes import ProcessTable, atomic_write, free_port, log_tail, wait_until

NAME = "airflow-standalone"
USER = "admin"


def _home() -> Path:
    return paths.state_dir() / "airflow"


def _table() -> ProcessTable:
    return ProcessTable(_home() / "run", _home() / "logs")


def running_credentials() -> Credentials:
    data = json.loads(credentials_file().read_text())
    return Credentials(data["url"], data["username"], data["password"])


def running() -> Credentials | None:
    """The credentials of a standalone Airflow already running from this state directory."""
    record = _table().read(NAME)
    if record is None or not ProcessTable.alive(record):
        return None
    return running_credentials()


def start(*, progress: Callable[[str], None] = print, timeout: float = 240) -> Credentials:
    """Start (or find) standalone Airflow and return once its API, scheduler and DAGs are ready."""
    existing = running()
    if existing is not None:
        progress(f"airflow standalone already runs at {existing.url}")
        _sandbox_alerts_to(existing.url, progress)
        return existing
    home = _home()
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    password = secrets.token_urlsafe(12)
    passwords_file = home / "simple_auth_manager_passwords.json"
    atomic_write(passwords_file, json.dumps({USER: password}), mode=0o600)
    url = f"http://127.0.0.1:{port}"
    api_conn = {"conn_type": "http", "host": "127.0.0.1", "port": port, "login": USER, "password": password}
    env = {
        **os.environ,
        **airflow_environment({"airflow_api": api_conn}),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        # Airflow's log servers default to fixed ports (8793, 8794): a second standalone on the
        # machine (the demo next to a test, two test files at once) would find them taken.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
    }
    venv_bin = paths.project_root() / ".venv" / "bin"
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"  # standalone starts `airflow ...` children
    airflow = venv_bin / "airflow"
    record = _table().spawn(NAME, [str(airflow), "standalone"], env=env, cwd=paths.project_root())
    credentials = Credentials(url, USER, password)
    atomic_write(
        credentials_file(), json.dumps({"url": url, "username": USER, "password": password}), mode=0o600
    )
    progress(f"starting airflow standalone on {url} (log: {record.log}) ...")
    # Stop waiting early if standalone exits (a port taken, a broken config).
    say = Progress(progress)
    began = time.monotonic()
    wait_until(lambda: healthy(credentials, say) or not ProcessTable.alive(record), timeout, interval=2.0)
    alive = ProcessTable.alive(record)
    if not alive or not healthy(credentials, say):
        waited = time.monotonic() - began
        why = (
            f"not ready after {waited:.0f} s (limit {timeout:.0f} s), last {say.last or 'no answer'}"
            if alive
            else f"exited after {waited:.0f} s"
        )
        tail = log_tail(record.log, 40)
        stop(progress=progress)
        raise RuntimeError(f"airflow standalone {why}; the end of {record.log}:\n{tail}")
    progress(f"airflow standalone is ready at {url}")
    _sandbox_alerts_to(url, progress)
    return credentials


def stop(*, progress: Callable[[str], None] = print) -> bool:
    """Stop standalone Airflow and every process of its group; True when something was running."""
    table = _table()
    record = table.read(NAME)
    if record is None:
        progress("airflow standalone is not running")
        return False
    progress(f"stopping airflow standalone (process group {record.pgid}) ...")
    table.stop(record, timeout=30)
    credentials_file().unlink(missing_ok=True)
    _sandbox_alerts_to(None, progress)
    progress("airflow standalone stopped")
    return True


def _sandbox_alerts_to(url: str | None, progress: Callable[[str], None]) -> None:
    """Point the running sandbox's Alertmanager at ``url`` (None: nowhere); no sandbox, nothing."""
    from opsdag.dev.sandbox.alertmanager_server import point_alerts_at
    from opsdag.dev.sandbox.state import Layout, SandboxError, load_state

    layout = Layout.default()
    try:
        if not (load_state(layout) or {}).get("alertmanager"):
            return
        progress(f"sandbox alertmanager posts to {point_alerts_at(layout, url)}")
    except SandboxError as exc:
        progress(f"sandbox alertmanager not repointed: {exc}")

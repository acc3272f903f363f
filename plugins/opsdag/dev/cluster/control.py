"""Start, stop and inspect the local Airflow cluster (``scripts/cluster up|down|status``).

Every process runs in its own session and is recorded in a pidfile
(:class:`~opsdag.dev.sandbox.processes.ProcessTable`), so ``down`` and the fault tests end
exactly what ``up`` started, by process group. ``up`` starts whatever is not running (a
second ``up`` changes nothing; after a component was killed it starts that one again).

Secrets never reach a command line or the environment: the metadata database URL (with
its password), the broker URL, the Fernet key and the API's signing keys are generated
into 0600 files and read by Airflow through its ``*_CMD`` settings. The admin password is
in ``api-credentials.json`` (0600), as for the demo.

Layout of ``<state>/cluster``::

    postgres/ redis/           the metadata database and the broker
    airflow/                   AIRFLOW_HOME (task logs under airflow/logs)
    secrets/                   one 0600 file per secret setting
    run/ logs/                 pidfiles and each process's own log
    cluster.json               ports chosen at the first start of the running cluster
    api-credentials.json       {"url", "username", "password"} for the REST client
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from opsdag import paths
from opsdag.airflow_api import Credentials
from opsdag.dev.airflow_env import airflow_environment
from opsdag.dev.airflow_health import Progress, healthy
from opsdag.dev.cluster import process_tree, topology
from opsdag.dev.cluster.redis_server import RedisServer
from opsdag.dev.sandbox.postgres import PostgresServer
from opsdag.dev.sandbox.processes import ProcessTable, atomic_write, free_port, log_tail, wait_until

USER = "admin"
DATABASE = "airflow"


def home() -> Path:
    return paths.state_dir() / "cluster"


def credentials_path() -> Path:
    return home() / "api-credentials.json"


def _passwords_file() -> Path:
    return home() / "simple_auth_manager_passwords.json"


def table() -> ProcessTable:
    return ProcessTable(home() / "run", home() / "logs")


def _postgres() -> PostgresServer:
    # Two schedulers, a DAG processor, a triggerer, the API server and 8 task slots each keep
    # a pool of connections: more than PostgreSQL's default 100.
    return PostgresServer(home() / "postgres", settings={"max_connections": 300})


def _redis() -> RedisServer:
    return RedisServer(home() / "redis", table())


def _running(name: str) -> bool:
    record = table().read(name)
    return record is not None and ProcessTable.alive(record)


def anything_running() -> bool:
    return any(_running(c.name) for c in topology.COMPONENTS) or _redis().running() or _postgres().running()


# -- settings --------------------------------------------------------------------------


def _secret(name: str, make: Callable[[], str]) -> Path:
    path = home() / "secrets" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(path, make(), mode=0o600)
    return path


def _ports() -> dict[str, Any]:
    """Ports of the running cluster, or new free ones when nothing of it runs."""
    state = home() / "cluster.json"
    if state.exists() and any(_running(c.name) for c in topology.COMPONENTS):
        return json.loads(state.read_text())
    ports = {"api": free_port(), "components": {}}
    for item in topology.COMPONENTS:
        ports["components"][item.name] = {setting: free_port() for setting in item.ports}
    atomic_write(state, json.dumps(ports, indent=2))
    return ports


def environment(ports: dict[str, Any]) -> dict[str, str]:
    """What every component runs with: scripts/airflow's settings, the Celery layout, secrets by file."""
    pg, broker = _postgres(), _redis()
    url = f"http://127.0.0.1:{ports['api']}"
    password = json.loads(credentials_path().read_text())["password"]
    api_conn = {
        "conn_type": "http",
        "host": "127.0.0.1",
        "port": ports["api"],
        "login": USER,
        "password": password,
    }
    db = f"postgresql+psycopg2://{pg.superuser}:{quote(pg.password, safe='')}@127.0.0.1:{pg.port}/{DATABASE}"
    result_backend = "db+" + db.replace("+psycopg2", "")
    files = {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": _secret("sql_alchemy_conn", lambda: db),
        "AIRFLOW__CELERY__RESULT_BACKEND": _secret("result_backend", lambda: result_backend),
        "AIRFLOW__CELERY__BROKER_URL": _secret("broker_url", broker.url),
        "AIRFLOW__CORE__FERNET_KEY": _secret("fernet_key", _fernet_key),
        "AIRFLOW__API__SECRET_KEY": _secret("api_secret_key", lambda: secrets.token_urlsafe(32)),
        "AIRFLOW__API_AUTH__JWT_SECRET": _secret("jwt_secret", lambda: secrets.token_urlsafe(32)),
    }
    env = {**os.environ, **airflow_environment({"airflow_api": api_conn})}
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


def _airflow() -> str:
    return str(paths.project_root() / ".venv" / "bin" / "airflow")


# -- up / down / status ------------------------------------------------------------------


def credentials() -> Credentials:
    data = json.loads(credentials_path().read_text())
    return Credentials(data["url"], data["username"], data["password"])


def up(*, progress: Callable[[str], None] = print, timeout: float = 300) -> Credentials:
    """Start what is not running and return once the cluster is ready for opsdag's runs."""
    root = home()
    root.mkdir(parents=True, exist_ok=True)
    progress(f"cluster state in {root}")
    pg = _postgres().start()
    pg.create_database(DATABASE)
    progress(f"  postgresql (metadata database) on 127.0.0.1:{pg.port}")
    broker = _redis()
    broker.start()
    progress(f"  redis (Celery broker) on 127.0.0.1:{broker.port}")
    ports = _ports()
    url = f"http://127.0.0.1:{ports['api']}"
    if not credentials_path().exists() or not any(_running(c.name) for c in topology.COMPONENTS):
        password = secrets.token_urlsafe(12)
        atomic_write(_passwords_file(), json.dumps({USER: password}), mode=0o600)
        atomic_write(
            credentials_path(), json.dumps({"url": url, "username": USER, "password": password}), mode=0o600
        )
    env = environment(ports)
    _migrate(env, progress)
    for item in topology.COMPONENTS:
        if _running(item.name):
            continue
        own = {setting: str(port) for setting, port in ports["components"][item.name].items()}
        table().spawn(item.name, [_airflow(), *item.command], env={**env, **own}, cwd=paths.project_root())
        progress(f"  started {item.name}")
    ready = credentials()
    say = Progress(progress)
    if not wait_until(lambda: _ready(ready, say), timeout, interval=2.0):
        dead = [c.name for c in topology.COMPONENTS if not _running(c.name)]
        tails = "\n".join(f"--- {name}:\n{log_tail(table().log_path(name), 20)}" for name in dead)
        raise RuntimeError(f"the cluster was not ready within {timeout:.0f} s; not running: {dead}\n{tails}")
    progress(f"the cluster is ready: UI and REST API at {url}")
    progress(f"  credentials (0600): {credentials_path()}")
    progress(
        f"  to release on it: OPSDAG_AIRFLOW_CREDENTIALS={credentials_path()} python -m opsdag release ..."
    )
    return ready


def _migrate(env: dict[str, str], progress: Callable[[str], None]) -> None:
    marker = home() / "airflow" / "migrated"
    if marker.exists():
        return
    progress("  migrating the metadata database (airflow db migrate) ...")
    (home() / "airflow").mkdir(parents=True, exist_ok=True)
    done = subprocess.run([_airflow(), "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    marker.write_text("done\n")


def _ready(credentials: Credentials, say: Callable[[str], None]) -> bool:
    dead = [c.name for c in topology.COMPONENTS if not _running(c.name)]
    if dead:
        raise RuntimeError(
            f"{dead[0]} exited while the cluster started:\n{log_tail(table().log_path(dead[0]), 30)}"
        )
    not_ready = [name for name in topology.WORKERS if not worker_ready(name)]
    if not_ready:
        say(f"waiting for the Celery workers {', '.join(not_ready)}")
        return False
    return healthy(credentials, say)


def worker_ready(name: str) -> bool:
    """Celery prints '<node> ready.' once it consumes from the broker (after its latest start)."""
    try:
        log = table().log_path(name).read_text(errors="replace")
    except FileNotFoundError:
        return False
    return " ready." in log[log.rfind("--- ") :]


def down(*, progress: Callable[[str], None] = print) -> bool:
    """Stop every process the cluster started (its data stays for the next ``up``)."""
    stopped = False
    for item in reversed(topology.COMPONENTS):
        record = table().read(item.name)
        if record is not None:
            progress(f"  stopping {item.name} (process group {record.pgid})")
            tree = process_tree.descendants(set(ProcessTable.group_alive(record)))
            table().stop(record, timeout=30)
            for pid in filter(process_tree.alive, tree):  # task processes in groups of their own
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            stopped = True
    broker = _redis()
    if broker.running():
        progress("  stopping redis")
        stopped = True
    broker.stop()
    pg = _postgres()
    if pg.running():
        progress("  stopping postgresql")
        pg.stop()
        stopped = True
    credentials_path().unlink(missing_ok=True)
    progress("the cluster is stopped" if stopped else "the cluster was not running")
    return stopped


def status() -> dict[str, Any]:
    """Each process: running or not, its PID and log; and the URL when the API server runs."""
    processes = {}
    for item in topology.COMPONENTS:
        record = table().read(item.name)
        alive = record is not None and ProcessTable.alive(record)
        processes[item.name] = {
            "running": alive,
            "pid": record.pid if alive else None,
            "log": str(table().log_path(item.name)),
        }
    processes["redis"] = {"running": _redis().running()}
    processes["postgresql"] = {"running": _postgres().running()}
    url = credentials().url if credentials_path().exists() and processes["api-server"]["running"] else None
    return {"url": url, "processes": processes}


def kill(name: str, sig: signal.Signals = signal.SIGKILL) -> int:
    """Signal one component and every process it started (fault tests); its PID.

    A machine that dies takes its whole process tree: the Celery worker's pool *and* the task
    processes Airflow's supervisor puts in process groups of their own.
    """
    topology.component(name)
    record = table().read(name)
    if record is None or not ProcessTable.alive(record):
        raise RuntimeError(f"{name} is not running")
    tree = process_tree.descendants(set(ProcessTable.group_alive(record)))
    os.killpg(record.pgid, sig)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    wait_until(lambda: not ProcessTable.group_alive(record) and not any(map(process_tree.alive, tree)), 30)
    return record.pid


def owner_of(pid: int) -> str | None:
    """The component whose process tree holds ``pid`` (None if none does, or it has exited)."""
    groups = {r.pgid: r.name for r in (table().read(c.name) for c in topology.COMPONENTS) if r is not None}
    group = process_tree.ancestor_group(pid, set(groups))
    return groups[group] if group is not None else None

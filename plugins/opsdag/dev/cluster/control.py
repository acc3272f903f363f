"""Start, stop and inspect the local Airflow cluster (``scripts/cluster up|down|status``).

Every process runs in its own session and is recorded in a pidfile
(:class:`~opsdag.dev.sandbox.processes.ProcessTable`), so ``down`` and the fault tests end
exactly what ``up`` started, by process group. ``up`` starts whatever is not running (a
second ``up`` changes nothing; after a component was killed it starts that one again).

Settings and secrets: ``settings``; where everything lives: ``layout``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
from collections.abc import Callable
from typing import Any

from opsdag import paths
from opsdag.airflow_api import Credentials
from opsdag.dev.airflow_health import Progress, healthy
from opsdag.dev.cluster import process_tree, settings, topology
from opsdag.dev.cluster.layout import (
    DATABASE,
    USER,
    credentials,
    credentials_path,
    home,
    passwords_file,
    postgres,
    redis,
    running,
    table,
)
from opsdag.dev.sandbox.processes import ProcessTable, atomic_write, log_tail, wait_until

# -- up / down / status ------------------------------------------------------------------


def up(*, progress: Callable[[str], None] = print, timeout: float = 300) -> Credentials:
    """Start what is not running and return once the cluster is ready for opsdag's runs."""
    root = home()
    root.mkdir(parents=True, exist_ok=True)
    progress(f"cluster state in {root}")
    pg = postgres().start()
    pg.create_database(DATABASE)
    progress(f"  postgresql (metadata database) on 127.0.0.1:{pg.port}")
    broker = redis()
    broker.start()
    progress(f"  redis (Celery broker) on 127.0.0.1:{broker.port}")
    ports = settings.ports()
    url = f"http://127.0.0.1:{ports['api']}"
    if not credentials_path().exists() or not any(running(c.name) for c in topology.COMPONENTS):
        password = secrets.token_urlsafe(12)
        atomic_write(passwords_file(), json.dumps({USER: password}), mode=0o600)
        atomic_write(
            credentials_path(), json.dumps({"url": url, "username": USER, "password": password}), mode=0o600
        )
    env = settings.environment(ports)
    settings.migrate(env, progress)
    if not all(running(c.name) for c in topology.COMPONENTS):
        settings.import_connections(env, ports, progress)
    for item in topology.COMPONENTS:
        if running(item.name):
            continue
        own = {setting: str(port) for setting, port in ports["components"][item.name].items()}
        table().spawn(
            item.name, [settings.airflow(), *item.command], env={**env, **own}, cwd=paths.project_root()
        )
        progress(f"  started {item.name}")
    ready = credentials()
    say = Progress(progress)
    if not wait_until(lambda: _ready(ready, say), timeout, interval=2.0):
        dead = [c.name for c in topology.COMPONENTS if not running(c.name)]
        tails = "\n".join(f"--- {name}:\n{log_tail(table().log_path(name), 20)}" for name in dead)
        raise RuntimeError(f"the cluster was not ready within {timeout:.0f} s; not running: {dead}\n{tails}")
    progress(f"the cluster is ready: UI and REST API at {url}")
    progress(f"  credentials (0600): {credentials_path()}")
    progress(
        f"  to release on it: OPSDAG_AIRFLOW_CREDENTIALS={credentials_path()} python -m opsdag release ..."
    )
    return ready


def _ready(credentials: Credentials, say: Callable[[str], None]) -> bool:
    dead = [c.name for c in topology.COMPONENTS if not running(c.name)]
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
            process_tree.signal_all(tree, signal.SIGKILL)  # task processes in groups of their own
            stopped = True
    broker = redis()
    if broker.running():
        progress("  stopping redis")
        stopped = True
    broker.stop()
    pg = postgres()
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
    processes["redis"] = {"running": redis().running()}
    processes["postgresql"] = {"running": postgres().running()}
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
    process_tree.signal_all(tree, sig)
    wait_until(lambda: not ProcessTable.group_alive(record) and not any(map(process_tree.alive, tree)), 30)
    return record.pid


def owner_of(pid: int) -> str | None:
    """The component whose process tree holds ``pid`` (None if none does, or it has exited)."""
    groups = {r.pgid: r.name for r in (table().read(c.name) for c in topology.COMPONENTS) if r is not None}
    group = process_tree.ancestor_group(pid, set(groups))
    return groups[group] if group is not None else None

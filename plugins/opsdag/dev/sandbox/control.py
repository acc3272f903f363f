"""``up`` / ``down`` of the whole sandbox.

``up`` starts, in order: PostgreSQL (with the ``demo`` database), the stable demo-app
instances, HAProxy, PostgreSQL's exporter, Alertmanager, Prometheus (evaluating the rules of
``include/alerts``), the load generator (``starters``), the image registry
(``image_registry``) and the Docker engine (``docker_engine``), keeping what already runs,
then publishes the Airflow connections. ``down`` stops every process recorded in the state
directory by process group (dockerd with ``docker_engine.stop_dockerd``, which also ends its
containerd) and then checks that none is left; data (PostgreSQL cluster, Prometheus TSDB,
the registry's images, the engine's layers) stays for the next ``up``.
"""

from __future__ import annotations

import shutil
import time

from opsdag.dev.sandbox import prometheus_server as prom
from opsdag.dev.sandbox import starters
from opsdag.dev.sandbox.alertmanager_server import start_alertmanager
from opsdag.dev.sandbox.connections import write_connections
from opsdag.dev.sandbox.demo_database import postgres_server
from opsdag.dev.sandbox.docker_engine import PROCESS_NAME as DOCKERD
from opsdag.dev.sandbox.docker_engine import remove_engine_run_dir, start_docker_engine, stop_dockerd
from opsdag.dev.sandbox.fleet import DEFAULT_INSTANCES, Fleet, new_fleet
from opsdag.dev.sandbox.image_registry import start_image_registry
from opsdag.dev.sandbox.postgres_exporter import start_postgres_exporter
from opsdag.dev.sandbox.starters import timed
from opsdag.dev.sandbox.state import (
    STATE_VERSION,
    Layout,
    Progress,
    SandboxError,
    load_state,
    locked,
    save_state,
)
from opsdag.dev.sandbox.status import SandboxStatus, sandbox_status
from opsdag.dev.sandbox.versions import load_versions

DEFAULT_RATE = 50.0
DEFAULT_MAX_DURATION = 6 * 3600.0


def up(
    *,
    layout: Layout | None = None,
    progress: Progress = print,
    rate: float = DEFAULT_RATE,
    max_duration: float = DEFAULT_MAX_DURATION,
    instances: int = DEFAULT_INSTANCES,
) -> SandboxStatus:
    """Start whatever of the sandbox is not running yet and return its status.

    ``instances`` is the number of stable processes of a fresh fleet (a running fleet
    keeps its own).
    """
    layout = layout or Layout.default()
    catalog = load_versions()
    with locked(layout):
        state = load_state(layout) or {}
        state.setdefault("state_version", STATE_VERSION)
        state.setdefault("created_at", time.time())
        state["root"] = str(layout.root)
        procs = layout.processes()

        starters.start_postgres(layout, state, progress)
        starters.start_marker_writer(layout, state, procs, progress, max_duration)
        save_state(layout, state)

        if not state.get("fleet"):
            state["fleet"] = new_fleet(catalog, instances)
        fleet = Fleet(layout, catalog, state)
        starters.start_stable(fleet, progress)
        save_state(layout, state)

        starters.start_haproxy(layout, state, fleet, procs, progress)
        save_state(layout, state)

        start_postgres_exporter(layout, state, procs, progress)
        start_alertmanager(layout, state, procs, progress)
        save_state(layout, state)

        starters.start_prometheus(layout, state, fleet, procs, progress)
        save_state(layout, state)

        starters.start_loadgen(layout, fleet, procs, progress, rate, max_duration)
        start_image_registry(layout, state, procs, progress)
        save_state(layout, state)
        start_docker_engine(layout, state, procs, progress)
        write_connections(layout, state)
        state["up_at"] = state.get("up_at") or time.time()
        save_state(layout, state)
    progress(f"sandbox is up in {layout.root}")
    return sandbox_status(layout)


def down(*, layout: Layout | None = None, progress: Progress = print, purge: bool = False) -> list[int]:
    """Stop every sandbox process (loadgen first, postgres last); returns PIDs that survived (none)."""
    layout = layout or Layout.default()
    if not layout.root.exists():
        progress(f"nothing to stop: {layout.root} does not exist")
        return []
    with locked(layout):
        procs = layout.processes()
        order = {"loadgen": 0, "marker-writer": 0, "prometheus": 1, "alertmanager": 2, "haproxy": 3}
        order |= {DOCKERD: -1, f"{DOCKERD}-containerd": 0}  # stop_dockerd stops both
        records = sorted(procs.records(), key=lambda r: order.get(r.name, 2))
        for record in records:
            alive = procs.group_alive(record)
            if record.name == DOCKERD:  # with its containerd, whether dockerd still runs or not
                done = timed(progress, f"stopping dockerd and its containerd (pgid {record.pgid})")
                stop_dockerd(procs)
                done()
            elif alive:
                done = timed(progress, f"stopping {record.name} (pgid {record.pgid})")
                procs.stop(record)
                done()
            else:
                procs.forget(record.name)
        server = postgres_server(layout)
        if server.running():
            done = timed(progress, f"stopping postgres (pid {server.pid()})")
            server.stop()
            done()
        survivors = [pid for record in records for pid in procs.group_alive(record)]
        if survivors:
            raise SandboxError(f"processes still running after down: {survivors}")
        state = load_state(layout)
        if state is not None:
            state.pop("fleet", None)
            state["down_at"] = time.time()
            state["up_at"] = None
            save_state(layout, state)
        if layout.targets_file.exists():
            prom.write_targets(layout.targets_file, "", [])
        layout.connections_file.unlink(missing_ok=True)
    if purge:
        postgres_server(layout).remove_relocated()
        remove_engine_run_dir(layout)
        shutil.rmtree(layout.root, ignore_errors=True)
        progress(f"removed {layout.root}")
    progress("sandbox is down")
    return []

"""Starting each server of the sandbox unless it already runs: PostgreSQL, the stable fleet,
HAProxy, Prometheus and the load generator (Alertmanager: ``alertmanager_server``; PostgreSQL's
exporter: ``postgres_exporter``).

Each ``start_*`` first looks at what already runs (pidfile + start time + a health probe)
and keeps it, so ``control.up`` twice is safe and ``up`` after a crash restarts only what
is missing, on its old port when that is free. Each records where it runs in ``state``;
the caller holds the sandbox lock and saves the state.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from opsdag import paths
from opsdag.backups.pg_server import server_user
from opsdag.dev.sandbox import haproxy_server as hap
from opsdag.dev.sandbox import prometheus_server as prom
from opsdag.dev.sandbox.demo_database import DEMO_DATABASE, create_demo_database, postgres_server
from opsdag.dev.sandbox.fleet import STABLE, Fleet, app_env, new_deployment_id
from opsdag.dev.sandbox.processes import ProcessTable, free_port, log_tail, port_free, wait_until
from opsdag.dev.sandbox.state import Layout, Progress, SandboxError
from opsdag.dev.sandbox.wal_archiving import prepare_archive

HAPROXY_BIN = "/usr/sbin/haproxy"
PROMETHEUS_BIN = "/usr/bin/prometheus"


def timed(progress: Progress, what: str) -> Callable[[str], None]:
    """Say that ``what`` starts; the function returned says it is done, and how long it took."""
    start = time.monotonic()
    progress(f"{what} ...")

    def done(detail: str = "ok") -> None:
        progress(f"{what}: {detail} ({time.monotonic() - start:.1f} s)")

    return done


def _port(preferred: int | None) -> int:
    if preferred and port_free(preferred):
        return preferred
    return free_port()


def start_postgres(layout: Layout, state: dict[str, Any], progress: Progress) -> None:
    """PostgreSQL (initdb on first start) with the ``demo`` database."""
    server = postgres_server(layout)
    if server.running():
        progress(f"postgres already running on 127.0.0.1:{server.port}")
    else:
        done = timed(progress, "starting postgres" + ("" if server.initialized else " (initdb first)"))
        prepare_archive(layout, server_user())
        server.start()
        done(f"127.0.0.1:{server.port}")
    create_demo_database(server)
    state["postgres"] = {**server.info(), "database": DEMO_DATABASE, "pid": server.pid()}


def start_stable(fleet: Fleet, progress: Progress) -> None:
    """The stable version's processes: those missing from its slots are started, dead ones cleared."""
    f = fleet.fleet
    catalog = fleet.catalog
    if f.get("stable") is None:
        version = catalog.get(catalog.initial_stable)
        f["stable"] = {
            "image": catalog.image_for(version.tag),
            "version": version.tag,
            "deployment": new_deployment_id(),
            "instances": [],
        }
    stable = f["stable"]
    version = catalog.get(stable["version"])
    if version is None:
        raise SandboxError(f"stable version {stable['version']} is no longer declared in {catalog.source}")
    slots = hap.slot_names(STABLE, f["slots"][STABLE])[: f["stable_instances"]]
    keep = [inst for inst in stable["instances"] if fleet.instance_exit(inst) is None]
    used = {inst["slot"] for inst in keep}
    started = []
    for slot in slots:
        if slot in used:
            continue
        index = 1 + max([int(i["name"].rsplit("-", 1)[1]) for i in stable["instances"]] + [0])
        inst = fleet.start_instance(version, stable["deployment"], index, slot)
        stable["instances"].append(inst)
        started.append(inst)
    dead = [inst for inst in stable["instances"] if inst not in keep and inst not in started]
    for inst in dead:  # the leader is gone; make sure nothing of its group lingers
        record = fleet.procs.read(inst["name"])
        if record is not None:
            fleet.procs.stop(record)
    stable["instances"] = keep + started
    if started:
        done = timed(progress, f"starting {len(started)} stable demo-app instance(s) of {version.tag}")
        fleet.wait_healthy(started)
        done(", ".join(f"{i['slot']}=127.0.0.1:{i['port']}" for i in started))
    else:
        progress(f"stable demo-app {version.tag} already running ({len(keep)} instances)")


def start_haproxy(
    layout: Layout, state: dict[str, Any], fleet: Fleet, procs: ProcessTable, progress: Progress
) -> None:
    info = state.setdefault("haproxy", {})
    info["socket"] = str(layout.haproxy_socket)
    info["backend"] = hap.BACKEND
    record = procs.read("haproxy")
    runtime = hap.HAProxyRuntime(layout.haproxy_socket)
    if record is not None and procs.alive(record) and runtime.ping() and _has_preview(runtime):
        progress(f"haproxy already running on 127.0.0.1:{info['frontend_port']}")
        fleet.apply_routing()
        return
    if record is not None:
        procs.stop(record)
    done = timed(progress, "starting haproxy")
    info["frontend_port"] = _port(info.get("frontend_port"))
    info["preview_port"] = _port(info.get("preview_port"))
    info["stats_port"] = _port(info.get("stats_port"))
    layout.haproxy_dir.mkdir(parents=True, exist_ok=True)
    layout.haproxy_socket.unlink(missing_ok=True)
    layout.haproxy_config.write_text(
        hap.render_config(
            frontend_port=info["frontend_port"],
            stats_port=info["stats_port"],
            socket_path=layout.haproxy_socket,
            pid_file=layout.haproxy_dir / "haproxy.pid",
            slots=fleet.desired_slots(),
            preview_port=info["preview_port"],
            preview_slots=fleet.desired_preview_slots(),
        )
    )
    _check_config([HAPROXY_BIN, "-c", "-q", "-f", str(layout.haproxy_config)], "haproxy")
    record = procs.spawn("haproxy", [HAPROXY_BIN, "-db", "-f", str(layout.haproxy_config)])
    if not wait_until(lambda: runtime.ping() or not procs.alive(record), 15) or not procs.alive(record):
        raise SandboxError(f"haproxy did not start; see {record.log}:\n{_tail(record.log)}")
    info["pid"] = record.pid

    stable_slots = [s.name for s in fleet.desired_slots() if s.track == STABLE and s.port is not None]

    def stable_states() -> dict[str, str]:
        rows = runtime.servers()
        return {name: rows[name]["status"] for name in stable_slots}

    if not wait_until(lambda: all(v.startswith("UP") for v in stable_states().values()), 15, 0.1):
        raise SandboxError(f"haproxy does not see the stable slots UP: {stable_states()}")
    fleet.reset_baseline(runtime)
    done(
        f"frontend 127.0.0.1:{info['frontend_port']}, preview 127.0.0.1:{info['preview_port']}, "
        f"stats/metrics 127.0.0.1:{info['stats_port']}"
    )


def _has_preview(runtime: hap.HAProxyRuntime) -> bool:
    """Whether a running HAProxy has the preview route (one started by an older sandbox has not)."""
    try:
        return hap.PREVIEW_BACKEND in runtime.backends()
    except hap.HAProxyError:
        return False


def start_prometheus(
    layout: Layout, state: dict[str, Any], fleet: Fleet, procs: ProcessTable, progress: Progress
) -> None:
    info = state.setdefault("prometheus", {})
    fleet.write_targets()
    config = prom.render_config(
        app_job=fleet.fleet["service"],
        haproxy_stats_port=state["haproxy"]["stats_port"],
        targets_dir=layout.targets_file.parent,
        rule_files=[paths.include_dir() / "alerts" / "*.yaml", layout.prometheus_dir / "rules" / "*.yaml"],
        alertmanager_port=state.get("alertmanager", {}).get("port"),
        postgres_exporter_port=state.get("postgres_exporter", {}).get("port"),
        database_service=state.get("postgres_exporter", {}).get("service"),
    )
    record = procs.read("prometheus")
    if record is not None and procs.alive(record) and prom.PrometheusClient(info.get("url", "")).ready():
        if layout.prometheus_config.read_text() != config:
            layout.prometheus_config.write_text(config)
            prom.reload(info["url"])
        progress(f"prometheus already running at {info['url']}")
        return
    if record is not None:
        procs.stop(record)
    done = timed(progress, "starting prometheus")
    layout.prometheus_data.mkdir(parents=True, exist_ok=True)
    layout.prometheus_config.write_text(config)
    _check_config(["promtool", "check", "config", str(layout.prometheus_config)], "prometheus", optional=True)
    info["port"] = _port(info.get("port"))
    info["url"] = f"http://127.0.0.1:{info['port']}"
    argv = prom.command(
        binary=PROMETHEUS_BIN,
        config=layout.prometheus_config,
        data_dir=layout.prometheus_data,
        port=info["port"],
    )
    record = procs.spawn("prometheus", argv, cwd=layout.prometheus_dir)
    client = prom.PrometheusClient(info["url"])
    if not wait_until(lambda: client.ready() or not procs.alive(record), 30, 0.1) or not procs.alive(record):
        raise SandboxError(f"prometheus did not become ready; see {record.log}:\n{_tail(record.log)}")
    info["pid"] = record.pid
    done(info["url"])


def start_marker_writer(
    layout: Layout, state: dict[str, Any], procs: ProcessTable, progress: Progress, max_duration: float
) -> None:
    """A row in ``demo.opsdag_marker`` every few seconds: the truth of point-in-time drills."""
    record = procs.read("marker-writer")
    if record is not None and procs.alive(record):
        progress("marker writer already running")
        return
    if record is not None:
        procs.stop(record)
    done = timed(progress, "starting the marker writer")
    dsn = postgres_server(layout).dsn(DEMO_DATABASE)
    argv = [sys.executable, "-m", "opsdag.dev.sandbox.marker_writer", "--dsn", dsn]
    argv += ["--max-duration", f"{max_duration:g}"]
    record = procs.spawn("marker-writer", argv, env=app_env())
    state["marker_writer"] = {"pid": record.pid, "table": f"{DEMO_DATABASE}.opsdag_marker"}
    done(f"pid {record.pid}")


def start_loadgen(
    layout: Layout,
    fleet: Fleet,
    procs: ProcessTable,
    progress: Progress,
    rate: float,
    max_duration: float,
) -> None:
    """The load generator on the main route, sending the preview route its share (control file)."""
    state = fleet.state
    info = state.setdefault("loadgen", {})
    url = f"http://127.0.0.1:{state['haproxy']['frontend_port']}/"
    preview_url = f"http://127.0.0.1:{state['haproxy']['preview_port']}/"
    fleet.write_loadgen_control()
    record = procs.read("loadgen")
    running = record is not None and procs.alive(record)
    if running and info.get("url") == url and info.get("preview_url") == preview_url:
        progress(f"loadgen already running ({info['rate']:g} req/s)")
        return
    if record is not None:
        procs.stop(record)
    done = timed(progress, f"starting loadgen at {rate:g} req/s")
    layout.counts_file.parent.mkdir(parents=True, exist_ok=True)
    layout.counts_file.unlink(missing_ok=True)
    argv = [
        sys.executable,
        "-m",
        "opsdag.dev.sandbox.loadgen",
        "--url",
        url,
        "--counts-file",
        str(layout.counts_file),
        "--rate",
        f"{rate:g}",
        "--max-duration",
        f"{max_duration:g}",
        "--preview-url",
        preview_url,
        "--control-file",
        str(layout.loadgen_control_file),
    ]
    record = procs.spawn("loadgen", argv, env=app_env())
    if not wait_until(lambda: layout.counts_file.exists() or not procs.alive(record), 15) or not procs.alive(
        record
    ):
        raise SandboxError(f"loadgen did not start; see {record.log}:\n{_tail(record.log)}")
    info.update(
        {
            "pid": record.pid,
            "url": url,
            "preview_url": preview_url,
            "rate": rate,
            "max_duration_s": max_duration,
        }
    )
    info["counts_file"] = str(layout.counts_file)
    done(f"counts in {layout.counts_file}")


def _check_config(argv: list[str], what: str, optional: bool = False) -> None:
    if optional and shutil.which(argv[0]) is None:
        return
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SandboxError(f"{what} configuration rejected: {(proc.stderr or proc.stdout).strip()[-2000:]}")


def _tail(path: str) -> str:
    return log_tail(path, 20)

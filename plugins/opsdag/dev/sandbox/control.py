"""``up`` / ``down`` / ``status`` of the whole sandbox.

``up`` starts, in order: PostgreSQL (with the ``demo`` database), the stable demo-app
instances, HAProxy, Prometheus and the load generator. Each step first looks at what
already runs (pidfile + start time + a health probe) and keeps it, so ``up`` twice is
safe and ``up`` after a crash restarts only what is missing. ``down`` stops every
process recorded in the state directory by process group and then checks that none is
left; data (PostgreSQL cluster, Prometheus TSDB) stays for the next ``up``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from opsdag.dev.sandbox import haproxy as hap
from opsdag.dev.sandbox import prometheus_server as prom
from opsdag.dev.sandbox.fleet import DEFAULT_INSTANCES, STABLE, Fleet, app_env, new_deployment_id, new_fleet
from opsdag.dev.sandbox.postgres import PostgresServer
from opsdag.dev.sandbox.processes import (
    ProcessTable,
    atomic_write,
    free_port,
    log_tail,
    port_free,
    wait_until,
)
from opsdag.dev.sandbox.state import STATE_VERSION, Layout, SandboxError, load_state, locked, save_state
from opsdag.dev.sandbox.versions import load_versions

HAPROXY_BIN = "/usr/sbin/haproxy"
PROMETHEUS_BIN = "/usr/bin/prometheus"
DEMO_DATABASE = "demo"
DEFAULT_RATE = 50.0
DEFAULT_MAX_DURATION = 6 * 3600.0

Progress = Callable[[str], None]

_DEMO_SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    id serial PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS products (
    id serial PRIMARY KEY,
    sku text NOT NULL UNIQUE,
    title text NOT NULL,
    price_cents integer NOT NULL CHECK (price_cents >= 0)
);
CREATE TABLE IF NOT EXISTS orders (
    id serial PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers(id),
    product_id integer NOT NULL REFERENCES products(id),
    quantity integer NOT NULL CHECK (quantity > 0),
    ordered_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO customers (name, email)
SELECT 'Customer ' || i, 'customer' || i || '@example.test' FROM generate_series(1, 50) AS i
ON CONFLICT (email) DO NOTHING;
INSERT INTO products (sku, title, price_cents)
SELECT 'SKU-' || lpad(i::text, 4, '0'), 'Product ' || i, 100 * i + 99 FROM generate_series(1, 20) AS i
ON CONFLICT (sku) DO NOTHING;
INSERT INTO orders (customer_id, product_id, quantity, ordered_at)
SELECT 1 + (i * 7) % 50, 1 + (i * 3) % 20, 1 + i % 5, timestamptz '2025-01-01' + i * interval '1 hour'
FROM generate_series(1, 200) AS i
WHERE NOT EXISTS (SELECT 1 FROM orders);
"""


def _timed(progress: Progress, what: str) -> Callable[[str], None]:
    start = time.monotonic()
    progress(f"{what} ...")

    def done(detail: str = "ok") -> None:
        progress(f"{what}: {detail} ({time.monotonic() - start:.1f} s)")

    return done


def _port(preferred: int | None) -> int:
    if preferred and port_free(preferred):
        return preferred
    return free_port()


def postgres_server(layout: Layout) -> PostgresServer:
    return PostgresServer(layout.postgres_dir, superuser="postgres")


def up(
    *,
    layout: Layout | None = None,
    progress: Progress = print,
    rate: float = DEFAULT_RATE,
    max_duration: float = DEFAULT_MAX_DURATION,
    instances: int = DEFAULT_INSTANCES,
) -> dict[str, Any]:
    """Start whatever of the sandbox is not running yet and return ``status()``.

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

        _up_postgres(layout, state, progress)
        save_state(layout, state)

        if not state.get("fleet"):
            state["fleet"] = new_fleet(catalog, instances)
        fleet = Fleet(layout, catalog, state)
        _up_stable(fleet, progress)
        save_state(layout, state)

        _up_haproxy(layout, state, fleet, procs, progress)
        save_state(layout, state)

        _up_prometheus(layout, state, fleet, procs, progress)
        save_state(layout, state)

        _up_loadgen(layout, state, procs, progress, rate, max_duration)
        write_connections(layout, state)
        state["up_at"] = state.get("up_at") or time.time()
        save_state(layout, state)
    progress(f"sandbox is up in {layout.root}")
    return status(layout=layout)


def _up_postgres(layout: Layout, state: dict[str, Any], progress: Progress) -> None:
    server = postgres_server(layout)
    if server.running():
        progress(f"postgres already running on 127.0.0.1:{server.port}")
    else:
        done = _timed(progress, "starting postgres" + ("" if server.initialized else " (initdb first)"))
        server.start()
        done(f"127.0.0.1:{server.port}")
    server.create_database(DEMO_DATABASE)
    server.psql(_DEMO_SCHEMA, dbname=DEMO_DATABASE)
    state["postgres"] = {**server.info(), "database": DEMO_DATABASE, "pid": server.pid()}


def _up_stable(fleet: Fleet, progress: Progress) -> None:
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
        done = _timed(progress, f"starting {len(started)} stable demo-app instance(s) of {version.tag}")
        fleet.wait_healthy(started)
        done(", ".join(f"{i['slot']}=127.0.0.1:{i['port']}" for i in started))
    else:
        progress(f"stable demo-app {version.tag} already running ({len(keep)} instances)")


def _up_haproxy(
    layout: Layout, state: dict[str, Any], fleet: Fleet, procs: ProcessTable, progress: Progress
) -> None:
    info = state.setdefault("haproxy", {})
    info["socket"] = str(layout.haproxy_socket)
    info["backend"] = hap.BACKEND
    record = procs.read("haproxy")
    runtime = hap.HAProxyRuntime(layout.haproxy_socket)
    if record is not None and procs.alive(record) and runtime.ping():
        progress(f"haproxy already running on 127.0.0.1:{info['frontend_port']}")
        fleet.apply_routing()
        return
    if record is not None:
        procs.stop(record)
    done = _timed(progress, "starting haproxy")
    info["frontend_port"] = _port(info.get("frontend_port"))
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
    done(f"frontend 127.0.0.1:{info['frontend_port']}, stats/metrics 127.0.0.1:{info['stats_port']}")


def _up_prometheus(
    layout: Layout, state: dict[str, Any], fleet: Fleet, procs: ProcessTable, progress: Progress
) -> None:
    info = state.setdefault("prometheus", {})
    fleet.write_targets()
    config = prom.render_config(
        app_job=fleet.fleet["service"],
        haproxy_stats_port=state["haproxy"]["stats_port"],
        targets_dir=layout.targets_file.parent,
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
    done = _timed(progress, "starting prometheus")
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


def _up_loadgen(
    layout: Layout,
    state: dict[str, Any],
    procs: ProcessTable,
    progress: Progress,
    rate: float,
    max_duration: float,
) -> None:
    info = state.setdefault("loadgen", {})
    url = f"http://127.0.0.1:{state['haproxy']['frontend_port']}/"
    record = procs.read("loadgen")
    if record is not None and procs.alive(record) and info.get("url") == url:
        progress(f"loadgen already running ({info['rate']:g} req/s)")
        return
    if record is not None:
        procs.stop(record)
    done = _timed(progress, f"starting loadgen at {rate:g} req/s")
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
    ]
    record = procs.spawn("loadgen", argv, env=app_env())
    if not wait_until(lambda: layout.counts_file.exists() or not procs.alive(record), 15) or not procs.alive(
        record
    ):
        raise SandboxError(f"loadgen did not start; see {record.log}:\n{_tail(record.log)}")
    info.update({"pid": record.pid, "url": url, "rate": rate, "max_duration_s": max_duration})
    info["counts_file"] = str(layout.counts_file)
    done(f"counts in {layout.counts_file}")


def write_connections(layout: Layout, state: dict[str, Any]) -> None:
    """Publish Airflow connections to the sandbox's servers in ``connections.json`` (0600).

    ``opsdag.dev.airflow_env`` exports them as ``AIRFLOW_CONN_*`` variables: Prometheus
    (``prometheus_default``), the demo database (``postgres_demo``) and the same server as
    the DR-drill target (``postgres_drill``, marked ``opsdag_drill_target``). The file
    holds the PostgreSQL password, like ``postgres/password``; ``down`` removes it.
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
        "prometheus_default": {"conn_type": "http", "host": "127.0.0.1", "port": state["prometheus"]["port"]},
        "postgres_demo": {**postgres, "schema": DEMO_DATABASE},
        "postgres_drill": {**postgres, "schema": "postgres", "extra": {"opsdag_drill_target": True}},
    }
    atomic_write(layout.connections_file, json.dumps(connections, indent=2) + "\n", mode=0o600)


def _check_config(argv: list[str], what: str, optional: bool = False) -> None:
    if optional and shutil.which(argv[0]) is None:
        return
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SandboxError(f"{what} configuration rejected: {(proc.stderr or proc.stdout).strip()[-2000:]}")


def _tail(path: str) -> str:
    return log_tail(path, 20)


def down(*, layout: Layout | None = None, progress: Progress = print, purge: bool = False) -> list[int]:
    """Stop every sandbox process (loadgen first, postgres last); returns PIDs that survived (none)."""
    layout = layout or Layout.default()
    if not layout.root.exists():
        progress(f"nothing to stop: {layout.root} does not exist")
        return []
    with locked(layout):
        procs = layout.processes()
        order = {"loadgen": 0, "prometheus": 1, "haproxy": 3}
        records = sorted(procs.records(), key=lambda r: order.get(r.name, 2))
        for record in records:
            alive = procs.group_alive(record)
            if alive:
                done = _timed(progress, f"stopping {record.name} (pgid {record.pgid})")
                procs.stop(record)
                done()
            else:
                procs.forget(record.name)
        server = postgres_server(layout)
        if server.running():
            done = _timed(progress, f"stopping postgres (pid {server.pid()})")
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
        shutil.rmtree(layout.root, ignore_errors=True)
        progress(f"removed {layout.root}")
    progress("sandbox is down")
    return []


def _component(procs: ProcessTable, name: str) -> dict[str, Any]:
    record = procs.read(name)
    if record is None:
        return {"running": False, "pid": None}
    return {"running": procs.alive(record), "pid": record.pid, "log": record.log}


def read_counts(layout: Layout) -> dict[str, Any] | None:
    try:
        return json.loads(layout.counts_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def status(*, layout: Layout | None = None) -> dict[str, Any]:
    """What runs where: components, ports/URLs, fleet versions and the traffic split (no secrets)."""
    layout = layout or Layout.default()
    state = load_state(layout)
    result: dict[str, Any] = {
        "sandbox_dir": str(layout.root),
        "up": False,
        "connections_file": str(layout.connections_file),
    }
    if state is None:
        return result
    procs = layout.processes()
    server = postgres_server(layout)
    pg_info = state.get("postgres", {})
    result["postgres"] = {
        "running": server.running(),
        "pid": server.pid(),
        "host": pg_info.get("host"),
        "port": pg_info.get("port"),
        "user": pg_info.get("user"),
        "password_file": pg_info.get("password_file"),
        "passfile": pg_info.get("passfile"),
        "database": pg_info.get("database"),
        "data_dir": pg_info.get("data_dir"),
    }
    ha = state.get("haproxy", {})
    result["haproxy"] = {
        **_component(procs, "haproxy"),
        "frontend_url": f"http://127.0.0.1:{ha['frontend_port']}/" if ha.get("frontend_port") else None,
        "stats_url": f"http://127.0.0.1:{ha['stats_port']}/stats" if ha.get("stats_port") else None,
        "metrics_url": f"http://127.0.0.1:{ha['stats_port']}/metrics" if ha.get("stats_port") else None,
        "runtime_socket": ha.get("socket"),
        "backend": ha.get("backend"),
    }
    pr = state.get("prometheus", {})
    result["prometheus"] = {
        **_component(procs, "prometheus"),
        "url": pr.get("url"),
        "targets_file": str(layout.targets_file),
    }
    lg = state.get("loadgen", {})
    counts = read_counts(layout)
    result["loadgen"] = {
        **_component(procs, "loadgen"),
        "rate": lg.get("rate"),
        "counts_file": lg.get("counts_file") or str(layout.counts_file),
        "total": counts.get("total") if counts else None,
        "by_version": counts.get("by_version") if counts else None,
        "by_status": counts.get("by_status") if counts else None,
        "updated_at": counts.get("updated_at") if counts else None,
    }
    f = state.get("fleet")
    if f:
        catalog = load_versions()
        fleet = Fleet(layout, catalog, state)
        stable = f.get("stable") or {}
        canary = f.get("canary")
        result["service"] = f.get("service")
        result["stable"] = {
            "version": stable.get("version"),
            "image": stable.get("image"),
            "deployment": stable.get("deployment"),
            "instances": [fleet.instance_view(i) for i in stable.get("instances", [])],
        }
        result["canary"] = (
            {
                "version": canary.get("version"),
                "image": canary.get("image"),
                "deployment": canary.get("deployment"),
                "failed": canary.get("failed"),
                "instances": [fleet.instance_view(i) for i in canary.get("instances", [])],
            }
            if canary
            else None
        )
        result["canary_weight"] = f.get("weight", 0)
        result["traffic"] = fleet.traffic() if result["haproxy"]["running"] else None
    components = [result["postgres"], result["haproxy"], result["prometheus"], result["loadgen"]]
    stable_running = bool(f) and all(i["running"] for i in result["stable"]["instances"])
    result["up"] = bool(f) and stable_running and all(c["running"] for c in components)
    return result


def format_status(st: dict[str, Any]) -> str:
    """Human-readable ``status``."""
    lines = [f"sandbox {st['sandbox_dir']}: {'up' if st['up'] else 'NOT up'}"]
    if "postgres" not in st:
        return "\n".join(lines)

    def flag(component: dict[str, Any]) -> str:
        return f"running (pid {component['pid']})" if component.get("running") else "stopped"

    pg = st["postgres"]
    lines.append(
        f"  postgres    {flag(pg)}  host={pg['host']} port={pg['port']} user={pg['user']} "
        f"db={pg['database']} password-file={pg['password_file']}"
    )
    ha = st["haproxy"]
    lines.append(f"  haproxy     {flag(ha)}  frontend={ha['frontend_url']} metrics={ha['metrics_url']}")
    lines.append(f"              runtime socket={ha['runtime_socket']}")
    pr = st["prometheus"]
    lines.append(f"  prometheus  {flag(pr)}  {pr['url']}")
    lg = st["loadgen"]
    lines.append(
        f"  loadgen     {flag(lg)}  {lg['rate']} req/s, {lg['total']} answers, counts={lg['counts_file']}"
    )
    if lg.get("by_version"):
        lines.append(
            "              by version: " + ", ".join(f"{k}={v}" for k, v in sorted(lg["by_version"].items()))
        )
    if st.get("stable"):
        s = st["stable"]
        ports = ", ".join(
            f"{i['slot']}=:{i['port']}{'' if i['running'] else ' (down)'}" for i in s["instances"]
        )
        lines.append(f"  stable      {s['version']}  [{ports}]")
        c = st.get("canary")
        if c:
            ports = ", ".join(
                f"{i['slot']}=:{i['port']}{'' if i['running'] else ' (down)'}" for i in c["instances"]
            )
            failed = f"  FAILED: {c['failed']}" if c.get("failed") else ""
            lines.append(f"  canary      {c['version'] or c['image']}  [{ports}]{failed}")
        else:
            lines.append("  canary      none")
        t = st.get("traffic") or {}
        conf = t.get("configured", {})
        meas = t.get("measured") or {}
        answered = sum((meas.get("responses") or {}).values())
        lines.append(
            f"  traffic     configured stable {conf.get('stable')} % / canary {conf.get('canary')} %; "
            f"measured stable {meas.get('stable')} % / canary {meas.get('canary')} % "
            f"({answered} responses in {meas.get('window_s')} s)"
        )
    return "\n".join(lines)

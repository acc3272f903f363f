"""The demo fleet: stable and canary processes, HAProxy slots and Prometheus targets.

State lives in ``state.json`` under ``fleet`` (see ``new_fleet``). ``Fleet`` changes
processes, HAProxy's slots and the file_sd targets for a state its caller has loaded
under the sandbox lock (``controller.FleetController``, ``starters``); what runs now
is read by ``fleet_status``.

Routing model: the HAProxy backend has ``slots.stable`` stable slots and
``slots.canary`` canary slots (8 each). Each process of a track has one slot of that
track (scaling fills the lowest free ones); unused slots are parked in maint. A canary weight of p %
gives every canary slot in use ``weights.server_weights(p, n_stable, n_canary)[1]`` and
every stable one ``[0]``, so the canary side gets p % of the requests whatever the counts.
Promotion re-labels the canary's processes as stable (same processes, stable slots).
The preview route (blue-green) has its own frontend and backend: while it is open
(``preview.enabled``), preview slot i points at the process of canary slot i, and the
load generator sends ``preview.share`` of its requests there (``write_loadgen_control``).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import opsdag
from opsdag.dev.sandbox import haproxy_server as hap
from opsdag.dev.sandbox.processes import atomic_write, free_port, log_tail
from opsdag.dev.sandbox.prometheus_server import AppTarget, write_targets
from opsdag.dev.sandbox.state import Layout, Progress, SandboxError, require_state, save_state
from opsdag.dev.sandbox.versions import AppVersion, VersionCatalog, load_versions
from opsdag.platforms.weights import server_weights

STABLE = "stable"
CANARY = "canary"
APP_START_TIMEOUT = 20.0
DEFAULT_INSTANCES = 2


def new_fleet(catalog: VersionCatalog, stable_instances: int = DEFAULT_INSTANCES) -> dict[str, Any]:
    """Fleet state before anything is started."""
    if not 1 <= stable_instances <= hap.MAX_SLOTS:
        raise SandboxError(f"stable instances must be between 1 and {hap.MAX_SLOTS}, got {stable_instances}")
    return {
        "service": catalog.service,
        "slots": {STABLE: hap.MAX_SLOTS, CANARY: hap.MAX_SLOTS},
        "stable_instances": stable_instances,
        "stable": None,
        "canary": None,
        "weight": 0,
        "preview": {"enabled": False, "share": 0.0},
        "last_promoted": None,
        "baseline": {"at": time.time(), "responses": {}},
    }


def new_deployment_id() -> str:
    """Fresh value of the ``deployment`` target label, so a new set of processes has new series."""
    return f"{time.strftime('%H%M%S')}-{secrets.token_hex(2)}"


def plugins_dir() -> Path:
    return Path(opsdag.__file__).resolve().parents[1]


def app_env() -> dict[str, str]:
    """A minimal environment for sandbox processes: nothing of the caller's (e.g. Airflow secrets)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(plugins_dir()),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
    }


def http_ok(port: int, path: str = "/healthz", timeout: float = 0.5) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


class Fleet:
    """Operations on the fleet part of a loaded state; the caller holds the lock and saves."""

    def __init__(self, layout: Layout, catalog: VersionCatalog, state: dict[str, Any]) -> None:
        self.layout = layout
        self.catalog = catalog
        self.state = state
        self.procs = layout.processes()

    @property
    def fleet(self) -> dict[str, Any]:
        return self.state["fleet"]

    def runtime(self) -> hap.HAProxyRuntime:
        return hap.HAProxyRuntime(self.state["haproxy"]["socket"])

    # -- processes ------------------------------------------------------------------

    def start_instance(
        self, version: AppVersion, deployment: str, index: int, slot: str | None
    ) -> dict[str, Any]:
        name = f"app-{deployment}-{index}"
        port = free_port()
        argv = [sys.executable, "-m", "opsdag.dev.sandbox.demo_app", "--port", str(port), "--instance", name]
        record = self.procs.spawn(name, argv + version.app_args(), env=app_env(), record_exit=True)
        return {"name": name, "port": port, "slot": slot, "version": version.tag, "pid": record.pid}

    def instance_exit(self, inst: dict[str, Any]) -> str | None:
        """Why an instance is not running (exit status and log tail), or None if it runs."""
        record = self.procs.read(inst["name"])
        if record is not None and self.procs.alive(record):
            return None
        code = self.procs.exit_status(record) if record is not None else None
        status = f"exited with status {code}" if code is not None else "is not running"
        lines = log_tail(self.procs.log_path(inst["name"]), 20).splitlines()
        tail = " | ".join([line for line in lines if not line.startswith("--- ")][-5:])
        return f"process {inst['name']} (pid {inst.get('pid')}) {status}; log: {tail or '(empty)'}"

    def wait_healthy(self, instances: list[dict[str, Any]], timeout: float = APP_START_TIMEOUT) -> None:
        """Block until every instance answers /healthz; raise at once if one exits."""
        deadline = time.monotonic() + timeout
        pending = list(instances)
        while pending:
            for inst in list(pending):
                exited = self.instance_exit(inst)
                if exited:
                    raise SandboxError(f"demo app {inst['version']} failed to start: {exited}")
                if http_ok(inst["port"]):
                    pending.remove(inst)
            if pending and time.monotonic() > deadline:
                names = ", ".join(i["name"] for i in pending)
                raise SandboxError(
                    f"demo app instance(s) {names} did not answer /healthz within {timeout:.0f} s"
                )
            if pending:
                time.sleep(0.05)

    def stop_instances(self, instances: list[dict[str, Any]]) -> None:
        for inst in instances:
            record = self.procs.read(inst["name"])
            if record is not None:
                self.procs.stop(record, timeout=10)

    def add_instances(self, track: str, count: int) -> list[dict[str, Any]]:
        """Start ``count`` more processes of a track's version in its lowest free slots; the state
        is saved as they start (so none is forgotten if one fails to spawn)."""
        current = self.fleet[track]
        version = self.catalog.get(current["version"])
        if version is None:
            raise SandboxError(f"version {current['version']} is no longer declared in {self.catalog.source}")
        used = {inst.get("slot") for inst in current["instances"]}
        free = [name for name in hap.slot_names(track, self.fleet["slots"][track]) if name not in used]
        started = []
        try:
            for slot in free[:count]:
                # Process names are never reused: app-<deployment>-<n>, n one above the highest so far.
                index = 1 + max([int(i["name"].rsplit("-", 1)[1]) for i in current["instances"]] + [0])
                inst = self.start_instance(version, current["deployment"], index, slot)
                current["instances"].append(inst)
                started.append(inst)
        finally:
            save_state(self.layout, self.state)
        return started

    # -- routing --------------------------------------------------------------------

    def active_canary(self) -> list[dict[str, Any]]:
        canary = self.fleet.get("canary")
        if not canary or canary.get("failed"):
            return []
        return [inst for inst in canary["instances"] if inst.get("slot")]

    def desired_slots(self) -> list[hap.Slot]:
        """The main backend's slots as the state wants them (ports, per-server weights)."""
        slots = self.fleet["slots"]
        stable = {inst["slot"]: inst for inst in (self.fleet["stable"] or {}).get("instances", [])}
        canary = {inst["slot"]: inst for inst in self.active_canary()}
        stable_w, canary_w = server_weights(self.fleet["weight"], len(stable), len(canary))
        desired = []
        for name in hap.slot_names(STABLE, slots[STABLE]):
            inst = stable.get(name)
            desired.append(hap.Slot(name, STABLE, inst["port"] if inst else None, stable_w if inst else 0))
        for name in hap.slot_names(CANARY, slots[CANARY]):
            inst = canary.get(name)
            desired.append(hap.Slot(name, CANARY, inst["port"] if inst else None, canary_w if inst else 0))
        return desired

    def preview(self) -> dict[str, Any]:
        """``{"enabled": bool, "share": float}``: whether the preview route is open, and the
        share of the load generator's requests sent to it."""
        return self.fleet.setdefault("preview", {"enabled": False, "share": 0.0})

    def desired_preview_slots(self) -> list[hap.Slot]:
        """Preview slot i points at the process of canary slot i while the preview is open."""
        count = self.fleet["slots"][CANARY]
        canary = {inst["slot"]: inst for inst in self.active_canary()} if self.preview()["enabled"] else {}
        desired = []
        for i, name in enumerate(hap.slot_names(hap.PREVIEW_TRACK, count)):
            inst = canary.get(f"{CANARY}{i + 1}")
            desired.append(hap.Slot(name, CANARY, inst["port"] if inst else None, 1 if inst else 0))
        return desired

    def close_preview(self) -> None:
        """The preview route reaches nothing and gets no synthetic load (the canary goes away)."""
        self.fleet["preview"] = {"enabled": False, "share": 0.0}
        self.write_loadgen_control()

    def write_loadgen_control(self) -> None:
        """Tell the load generator which share of its requests goes to the preview route."""
        preview = self.preview()
        share = preview["share"] if preview["enabled"] else 0.0
        self.layout.loadgen_control_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.layout.loadgen_control_file, json.dumps({"preview_share": share}) + "\n")

    def apply_routing(self) -> hap.RoutingChange:
        """Make HAProxy's slots match the state (addresses, weights, ready/maint), in ONE runtime call.

        Only differences are sent, as one ``cmd; cmd; ...`` line, the main backend's first.
        Slots whose weight goes up change first and those going down after, so no moment
        sends a side more than both the old and the new split would. When the main backend
        changed, its measured split starts afresh.
        """
        runtime = self.runtime()
        current = runtime.backends()
        commands = hap.routing_commands(hap.BACKEND, current.get(hap.BACKEND, {}), self.desired_slots())
        main = len(commands)
        if hap.PREVIEW_BACKEND in current:  # a sandbox started before the preview route had none
            commands += hap.routing_commands(
                hap.PREVIEW_BACKEND, current[hap.PREVIEW_BACKEND], self.desired_preview_slots()
            )
        started = time.perf_counter()
        runtime.batch(commands)
        change = hap.RoutingChange(tuple(commands), time.perf_counter() - started)
        if main:
            self.reset_baseline(runtime)
        return change

    def reset_baseline(self, runtime: hap.HAProxyRuntime | None = None) -> None:
        """Remember per-slot response counters, so the measured split covers only the new routing."""
        try:
            rows = (runtime or self.runtime()).servers()
        except hap.HAProxyError:
            rows = {}
        self.fleet["baseline"] = {
            "at": time.time(),
            "responses": {name: hap.responses(row) for name, row in rows.items()},
        }

    def write_targets(self) -> None:
        targets = []
        stable = self.fleet.get("stable")
        if stable:
            for inst in stable["instances"]:
                targets.append(
                    AppTarget(inst["port"], STABLE, inst["version"], stable["deployment"], inst["slot"])
                )
        canary = self.fleet.get("canary")
        for inst in self.active_canary():
            targets.append(
                AppTarget(inst["port"], CANARY, inst["version"], canary["deployment"], inst["slot"])
            )
        write_targets(self.layout.targets_file, self.fleet["service"], targets)


def _quiet(_: str) -> None:
    pass


class FleetSession:
    """What the sandbox's controllers share: where the sandbox is, and opening its fleet from state."""

    def __init__(self, layout: Layout | None = None, progress: Progress = _quiet) -> None:
        self._layout = layout
        self.progress = progress

    @property
    def layout(self) -> Layout:
        return self._layout or Layout.default()

    def _open(self) -> tuple[Fleet, dict[str, Any]]:
        state = require_state(self.layout)
        return Fleet(self.layout, load_versions(), state), state

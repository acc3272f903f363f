"""The demo fleet: stable and canary processes, HAProxy slots and Prometheus targets.

State lives in ``state.json`` under ``fleet`` (see ``new_fleet``). ``Fleet`` changes
processes, HAProxy's slots and the file_sd targets for a state its caller has loaded
under the sandbox lock (``controller.FleetController``, ``starters``); what runs now
is read by ``fleet_status``.

Routing model: the HAProxy backend has ``slots.stable`` stable slots and
``slots.canary`` canary slots (8 each). Stable slot i points at stable process i, canary
slot i at canary process i; unused slots are parked in maint. A canary weight of p %
gives every canary slot in use ``weights.server_weights(p, n_stable, n_canary)[1]`` and
every stable one ``[0]``, so the canary side gets p % of the requests whatever the counts.
Promotion re-labels the canary's processes as stable (same processes, stable slots).
"""

from __future__ import annotations

import os
import secrets
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import opsdag
from opsdag.dev.sandbox import haproxy as hap
from opsdag.dev.sandbox.processes import free_port, log_tail
from opsdag.dev.sandbox.prometheus_server import AppTarget, write_targets
from opsdag.dev.sandbox.state import Layout, SandboxError
from opsdag.dev.sandbox.versions import AppVersion, VersionCatalog
from opsdag.platforms.weights import server_weights

STABLE = "stable"
CANARY = "canary"
APP_START_TIMEOUT = 20.0
DEFAULT_INSTANCES = 2


@dataclass(frozen=True)
class RoutingChange:
    """The runtime commands one routing change sent (in one call) and how long HAProxy took."""

    commands: tuple[str, ...]
    seconds: float

    def __bool__(self) -> bool:
        return bool(self.commands)


def routing_commands(
    backend: str, current: Mapping[str, Mapping[str, str]], desired: list[hap.Slot]
) -> list[str]:
    """The ``set server`` commands that take ``backend``'s servers from ``current`` (``show stat``
    rows) to ``desired``: rising weights first, then the rest; per slot weight, address, state."""

    def row(name: str) -> Mapping[str, str]:
        return current.get(name, {})

    def weight_of(name: str) -> int:
        return int(row(name).get("uweight") or row(name).get("weight") or 0)

    def effective(name: str) -> int:
        return 0 if row(name).get("status") == "MAINT" else weight_of(name)

    rising = [s for s in desired if s.weight > effective(s.name)]
    commands = []
    for slot in rising + [s for s in desired if s not in rising]:
        maint = row(slot.name).get("status") == "MAINT"
        if weight_of(slot.name) != slot.weight:
            commands.append(hap.weight_command(backend, slot.name, slot.weight))
        if slot.port is None:
            if not maint:
                commands.append(hap.state_command(backend, slot.name, "maint"))
            continue
        if row(slot.name).get("addr") != f"127.0.0.1:{slot.port}":
            commands.append(hap.addr_command(backend, slot.name, slot.port))
        if maint:
            commands.append(hap.state_command(backend, slot.name, "ready"))
    return commands


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

    def next_index(self, instances: list[dict[str, Any]]) -> int:
        """The number of a track's next process name (``app-<deployment>-<n>``), never reused."""
        return 1 + max([int(i["name"].rsplit("-", 1)[1]) for i in instances] + [0])

    def free_slots(self, track: str, instances: list[dict[str, Any]]) -> list[str]:
        """A track's slots no instance uses, lowest first."""
        used = {inst.get("slot") for inst in instances}
        return [name for name in hap.slot_names(track, self.fleet["slots"][track]) if name not in used]

    # -- routing --------------------------------------------------------------------

    def active_canary(self) -> list[dict[str, Any]]:
        canary = self.fleet.get("canary")
        if not canary or canary.get("failed"):
            return []
        return [inst for inst in canary["instances"] if inst.get("slot")]

    def desired_slots(self) -> list[hap.Slot]:
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

    def apply_routing(self) -> RoutingChange:
        """Make HAProxy's slots match the state (addresses, weights, ready/maint), in ONE runtime call.

        Only differences are sent, as one ``cmd; cmd; ...`` line. Slots whose weight goes
        up change first and those going down after, so no moment sends a side more than
        both the old and the new split would. When anything changed, the measured split
        starts afresh.
        """
        runtime = self.runtime()
        current = runtime.servers()
        commands = routing_commands(hap.BACKEND, current, self.desired_slots())
        started = time.perf_counter()
        runtime.batch(commands)
        change = RoutingChange(tuple(commands), time.perf_counter() - started)
        if change:
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

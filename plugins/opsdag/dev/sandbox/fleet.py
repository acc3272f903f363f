"""The demo fleet: stable and canary processes, HAProxy slots and Prometheus targets.

State lives in ``state.json`` under ``fleet`` (see ``new_fleet``); every change goes
through ``FleetController``, which takes the sandbox lock, reads the state, changes the
processes / HAProxy / file_sd, and saves the state, so the operations are idempotent
and safe to call from any process, one after another.

Routing model: the HAProxy backend has ``slots.stable`` stable slots and
``slots.canary`` canary slots (8 each). Stable slot i points at stable process i, canary
slot i at canary process i; unused slots are parked in maint. A canary weight of p %
gives every canary slot in use ``split_weights(p, n_stable, n_canary)[1]`` and every
stable one ``[0]``, so the canary side gets p % of the requests whatever the counts.
Promotion re-labels the canary's processes as stable (same processes, stable slots).
"""

from __future__ import annotations

import os
import secrets
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import opsdag
from opsdag.dev.sandbox import haproxy as hap
from opsdag.dev.sandbox.processes import free_port, log_tail
from opsdag.dev.sandbox.prometheus_server import AppTarget, write_targets
from opsdag.dev.sandbox.state import Layout, SandboxError, locked, require_state, save_state
from opsdag.dev.sandbox.versions import AppVersion, VersionCatalog, load_versions

STABLE = "stable"
CANARY = "canary"
APP_START_TIMEOUT = 20.0
DEFAULT_INSTANCES = 2
# HAProxy status words that mean "checks pass" (NOLB/DRAIN: up, but weight 0 or draining).
_UP_STATES = ("UP", "NOLB", "DRAIN")

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class Readiness:
    ready: bool
    failed: bool
    reason: str


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
        stable_w, canary_w = hap.split_weights(self.fleet["weight"], len(stable), len(canary))
        desired = []
        for name in hap.slot_names(STABLE, slots[STABLE]):
            inst = stable.get(name)
            desired.append(hap.Slot(name, STABLE, inst["port"] if inst else None, stable_w if inst else 0))
        for name in hap.slot_names(CANARY, slots[CANARY]):
            inst = canary.get(name)
            desired.append(hap.Slot(name, CANARY, inst["port"] if inst else None, canary_w if inst else 0))
        return desired

    def apply_routing(self) -> bool:
        """Make HAProxy's slots match the state (addresses, weights, ready/maint).

        Only differences are sent. Slots whose weight goes up change first and those going
        down after, so no moment sends a side more than both the old and the new split
        would. Returns whether anything changed (then the measured split starts afresh).
        """
        runtime = self.runtime()
        current = runtime.servers()
        backend = hap.BACKEND

        def row(name: str) -> dict[str, str]:
            return current.get(name, {})

        def weight_of(name: str) -> int:
            return int(row(name).get("uweight") or row(name).get("weight") or 0)

        def effective(name: str) -> int:
            return 0 if row(name).get("status") == "MAINT" else weight_of(name)

        desired = self.desired_slots()
        rising = [s for s in desired if s.weight > effective(s.name)]
        others = [s for s in desired if s not in rising]
        changed = False
        for slot in rising + others:
            maint = row(slot.name).get("status") == "MAINT"
            if weight_of(slot.name) != slot.weight:
                runtime.set_weight(backend, slot.name, slot.weight)
                changed = True
            if slot.port is None:
                if not maint:
                    runtime.set_state(backend, slot.name, "maint")
                    changed = True
                continue
            if row(slot.name).get("addr") != f"127.0.0.1:{slot.port}":
                runtime.set_addr(backend, slot.name, slot.port)
                changed = True
            if maint:
                runtime.set_state(backend, slot.name, "ready")
                changed = True
        if changed:
            self.reset_baseline(runtime)
        return changed

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

    # -- reading --------------------------------------------------------------------

    def traffic(self) -> dict[str, Any]:
        """Configured and measured split; measured = HAProxy responses per track since the last change."""
        percent = self.fleet["weight"]
        result: dict[str, Any] = {"configured": {STABLE: 100 - percent, CANARY: percent}}
        try:
            rows = self.runtime().servers()
        except hap.HAProxyError as exc:
            result["measured"] = None
            result["error"] = str(exc)
            return result
        baseline = self.fleet.get("baseline", {})
        counts = {STABLE: 0, CANARY: 0}
        servers = {}
        for name, row in rows.items():
            total = hap.responses(row)
            since = total - baseline.get("responses", {}).get(name, 0)
            if since < 0:  # HAProxy restarted since the baseline
                since = total
            track = CANARY if name.startswith(CANARY) else STABLE
            counts[track] += since
            if row.get("status") == "MAINT" and not since:
                continue  # a parked slot: nothing to tell
            servers[name] = {
                "track": track,
                "status": row.get("status"),
                "weight": int(row.get("weight") or 0),
                "addr": row.get("addr"),
                "responses": total,
                "responses_since_change": since,
                "check": row.get("check_status"),
            }
        total = counts[STABLE] + counts[CANARY]
        result["measured"] = {
            STABLE: round(100 * counts[STABLE] / total, 1) if total else None,
            CANARY: round(100 * counts[CANARY] / total, 1) if total else None,
            "responses": counts,
            "since": baseline.get("at"),
            "window_s": round(time.time() - baseline.get("at", time.time()), 1),
        }
        result["haproxy_servers"] = servers
        return result

    def instance_view(self, inst: dict[str, Any]) -> dict[str, Any]:
        return {**inst, "running": self.instance_exit(inst) is None}


class FleetController:
    """The platform operations on the sandbox fleet (used by ``SandboxPlatform``).

    Each method takes the sandbox lock for its whole duration and is idempotent.
    """

    def __init__(self, layout: Layout | None = None, progress: Progress = _quiet) -> None:
        self._layout = layout
        self.progress = progress

    @property
    def layout(self) -> Layout:
        return self._layout or Layout.default()

    def _open(self) -> tuple[Fleet, dict[str, Any]]:
        state = require_state(self.layout)
        return Fleet(self.layout, load_versions(), state), state

    def hosted_service(self) -> str:
        """The service the sandbox hosts (from its state, else from versions.yaml)."""
        state = require_state(self.layout)
        return state["fleet"].get("service") or load_versions().service

    def deploy_canary(self, image: str, instances: int | None = None) -> None:
        with locked(self.layout):
            fleet, state = self._open()
            f = fleet.fleet
            canary_slots = f["slots"][CANARY]
            count = instances or len((f.get("stable") or {}).get("instances", [])) or DEFAULT_INSTANCES
            if not 1 <= count <= canary_slots:
                raise SandboxError(f"canary instances must be between 1 and {canary_slots}, got {count}")
            current = f.get("canary")
            if current and current["image"] == image:
                self.progress(f"canary {image} already deployed; keeping it")
                return
            if current:
                self.progress(f"replacing canary {current['image']} with {image}")
                self._remove_canary(fleet)
            resolution = fleet.catalog.resolve(image)
            deployment = new_deployment_id()
            canary: dict[str, Any] = {
                "image": image,
                "version": resolution.version.tag if resolution.version else None,
                "deployment": deployment,
                "deployed_at": time.time(),
                "instances": [],
                "failed": None,
            }
            if resolution.version is None:
                canary["failed"] = resolution.reason
                f["canary"] = canary
                save_state(self.layout, state)
                self.progress(f"canary {image}: {resolution.reason}")
                return
            f["canary"] = canary
            f["weight"] = 0
            names = hap.slot_names(CANARY, canary_slots)
            try:
                for i in range(count):
                    canary["instances"].append(
                        fleet.start_instance(resolution.version, deployment, i + 1, names[i])
                    )
            finally:
                save_state(self.layout, state)
            fleet.apply_routing()
            fleet.write_targets()
            save_state(self.layout, state)
            self.progress(f"canary {image}: started {count} instance(s) at 0 %")

    def canary_readiness(self) -> Readiness:
        with locked(self.layout):
            fleet, state = self._open()
            canary = fleet.fleet.get("canary")
            if not canary:
                return Readiness(False, True, "no canary is deployed")
            if canary.get("failed"):
                return Readiness(False, True, canary["failed"])
            for inst in canary["instances"]:
                exited = fleet.instance_exit(inst)
                if exited:
                    canary["failed"] = f"canary {canary['image']}: {exited}"
                    fleet.fleet["weight"] = 0
                    fleet.apply_routing()
                    fleet.write_targets()
                    save_state(self.layout, state)
                    return Readiness(False, True, canary["failed"])
            waiting = [
                f"{inst['name']} does not answer /healthz yet"
                for inst in canary["instances"]
                if not http_ok(inst["port"])
            ]
            if not waiting:
                rows = fleet.runtime().servers()
                for inst in canary["instances"]:
                    status = rows.get(inst["slot"], {}).get("status", "missing")
                    if not status.startswith(_UP_STATES):
                        waiting.append(f"HAProxy sees {inst['slot']} ({inst['name']}) as {status}")
            if waiting:
                return Readiness(False, False, "; ".join(waiting))
            n = len(canary["instances"])
            return Readiness(
                True, False, f"{n} instance(s) of {canary['version']} answer /healthz and are UP in HAProxy"
            )

    def set_canary_weight(self, percent: int) -> None:
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise SandboxError(f"canary weight must be an integer between 0 and 100, got {percent!r}")
        with locked(self.layout):
            fleet, state = self._open()
            canary = fleet.fleet.get("canary")
            if percent > 0:
                if not canary:
                    raise SandboxError(f"cannot send {percent} % to the canary: no canary is deployed")
                if canary.get("failed"):
                    raise SandboxError(
                        f"cannot send {percent} % to canary {canary['image']}: {canary['failed']}"
                    )
            fleet.fleet["weight"] = percent
            fleet.apply_routing()
            save_state(self.layout, state)
            self.progress(f"canary weight set to {percent} %")

    def promote(self) -> None:
        with locked(self.layout):
            fleet, state = self._open()
            f = fleet.fleet
            canary = f.get("canary")
            if not canary:
                if f.get("last_promoted") and f["last_promoted"] == (f.get("stable") or {}).get("image"):
                    self.progress(f"{f['last_promoted']} is already the stable version")
                    return
                raise SandboxError("cannot promote: no canary is deployed")
            if canary.get("failed"):
                raise SandboxError(f"cannot promote canary {canary['image']}: {canary['failed']}")
            for inst in canary["instances"]:
                exited = fleet.instance_exit(inst)
                if exited:
                    raise SandboxError(f"cannot promote canary {canary['image']}: {exited}")
            version = fleet.catalog.get(canary["version"])
            if version is None:
                raise SandboxError(f"cannot promote: version {canary['version']} is no longer declared")
            old_stable = f["stable"]["instances"] if f.get("stable") else []
            # The stable slots will point at these: they must answer before they get 100 %.
            fleet.wait_healthy(canary["instances"])
            stable_names = hap.slot_names(STABLE, f["slots"][STABLE])
            new_stable = [{**inst, "slot": stable_names[i]} for i, inst in enumerate(canary["instances"])]
            f["stable"] = {
                "image": canary["image"],
                "version": canary["version"],
                "deployment": canary["deployment"],
                "instances": new_stable,
            }
            f["stable_instances"] = len(new_stable)
            f["canary"] = None
            f["weight"] = 0
            f["last_promoted"] = canary["image"]
            fleet.apply_routing()
            fleet.write_targets()
            save_state(self.layout, state)
            fleet.stop_instances(old_stable)
            self.progress(f"promoted {canary['image']} to stable at 100 %")

    def rollback(self) -> None:
        with locked(self.layout):
            fleet, state = self._open()
            canary = fleet.fleet.get("canary")
            self._remove_canary(fleet)
            save_state(self.layout, state)
            if canary:
                self.progress(f"rolled back canary {canary['image']}")

    def _remove_canary(self, fleet: Fleet) -> None:
        """Weight 0 first, then out of rotation, then stop its processes and forget it."""
        canary = fleet.fleet.get("canary")
        fleet.fleet["weight"] = 0
        fleet.apply_routing()  # canary slots weight 0 (stable up first)
        if canary:
            instances = canary["instances"]
            fleet.fleet["canary"] = None
            fleet.apply_routing()  # canary slots to maint
            fleet.write_targets()
            fleet.stop_instances(instances)

    def selectors(self) -> dict[str, str]:
        """PromQL matchers for ``$canary`` / ``$stable``; the canary's includes its fresh deployment id."""
        try:
            state = require_state(self.layout)
            fleet_state = state["fleet"]
        except SandboxError:
            fleet_state = {}
        job = fleet_state.get("service") or "demo-api"
        canary = f'job="{job}", track="canary"'
        current = fleet_state.get("canary")
        if current and current.get("version"):
            canary += f', version="{current["version"]}", deployment="{current["deployment"]}"'
        return {CANARY: canary, STABLE: f'job="{job}", track="stable"'}

"""The platform operations on the sandbox fleet: deploy a canary, weigh it, promote, roll back.

Every change ``FleetController`` makes takes the sandbox lock for its whole duration, reads
the state, changes the processes / HAProxy / file_sd through ``fleet.Fleet`` and saves
the state, so the operations are idempotent and safe to call from any process (Airflow
tasks of one release run in different processes), one after another. ``status()``
returns the typed ``FleetStatus`` the platform driver reads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from opsdag.dev.sandbox import haproxy as hap
from opsdag.dev.sandbox.fleet import CANARY, DEFAULT_INSTANCES, STABLE, Fleet, http_ok, new_deployment_id
from opsdag.dev.sandbox.fleet_status import FleetStatus, read_fleet_status
from opsdag.dev.sandbox.state import Layout, Progress, SandboxError, locked, require_state, save_state
from opsdag.dev.sandbox.versions import load_versions

# HAProxy status words that mean "checks pass" (NOLB/DRAIN: up, but weight 0 or draining).
_UP_STATES = ("UP", "NOLB", "DRAIN")


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class Readiness:
    """Whether the canary can take traffic; ``failed``: it never will (with the reason)."""

    ready: bool
    failed: bool
    reason: str


class FleetController:
    """The platform operations on the sandbox fleet (used by ``SandboxPlatform``).

    Each change takes the sandbox lock for its whole duration and is idempotent; ``status``
    only reads (the state file is replaced atomically).
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

    def status(self) -> FleetStatus:
        """What the fleet runs now; raises ``SandboxNotRunning`` when the sandbox is not up."""
        return read_fleet_status(self.layout, require_state(self.layout))

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

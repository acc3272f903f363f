"""The workload operations on the sandbox fleet: start, scale, promote and remove versions.

Every change ``FleetController`` makes takes the sandbox lock for its whole duration, reads
the state, changes the processes / HAProxy / file_sd through ``fleet.Fleet`` and saves
the state, so the operations are idempotent and safe to call from any process (Airflow
tasks and triggers of one release run in different processes) and thread. Reads
(``status``, ``readiness``'s probes) take no lock: the state file is replaced atomically.
``opsdag.platforms.sandbox.SandboxDriver`` is thin over it; traffic changes are
``routing.RoutingController``'s (the HAProxy router's).
"""

from __future__ import annotations

import time
from typing import Any

from opsdag.dev.sandbox import haproxy_server as hap
from opsdag.dev.sandbox.fleet import (
    CANARY,
    DEFAULT_INSTANCES,
    STABLE,
    Fleet,
    FleetSession,
    http_ok,
    new_deployment_id,
)
from opsdag.dev.sandbox.fleet_status import FleetStatus, read_fleet_status
from opsdag.dev.sandbox.image_resolution import push_repository, resolve_image
from opsdag.dev.sandbox.processes import log_tail
from opsdag.dev.sandbox.state import SandboxError, locked, require_state, save_state
from opsdag.dev.sandbox.versions import VersionLookup, load_versions
from opsdag.platforms.base import Readiness

# HAProxy status words that mean "checks pass" (NOLB/DRAIN: up, but weight 0 or draining).
_UP_STATES = ("UP", "NOLB", "DRAIN")


class FleetController(FleetSession):
    """The release operations on the sandbox fleet; each change holds the sandbox lock throughout."""

    # -- reading ----------------------------------------------------------------------

    def status(self) -> FleetStatus:
        """What the fleet runs now; raises ``SandboxNotRunning`` when the sandbox is not up."""
        return read_fleet_status(self.layout, require_state(self.layout))

    def hosted_service(self) -> str:
        """The service the sandbox hosts (from its state, else from versions.yaml)."""
        state = require_state(self.layout)
        return state["fleet"].get("service") or load_versions().service

    def resolve(self, image: str) -> VersionLookup:
        """The declared version ``image`` names, or why it cannot be pulled (``image_resolution``:
        a tag needs no running sandbox, an undeclared digest asks the sandbox's registry)."""
        return resolve_image(self.layout, load_versions(), image)

    def push_repository(self, repository: str) -> str:
        """Where a build pushes what the sandbox pulls as ``repository`` (its registry's address)."""
        return push_repository(self.layout, load_versions(), repository)

    def endpoints(self, track: str) -> list[str]:
        """Base URLs of a track's running instances."""
        state = require_state(self.layout)
        current = state["fleet"].get(track) or {}
        if track == CANARY and current.get("failed"):
            return []
        return [f"http://127.0.0.1:{inst['port']}" for inst in current.get("instances", [])]

    def logs(self, track: str, lines: int = 20) -> dict[str, str]:
        """The last ``lines`` lines of each of a track's instances' logs (instance name: text)."""
        state = require_state(self.layout)
        procs = self.layout.processes()
        current = state["fleet"].get(track) or {}
        return {
            inst["name"]: log_tail(procs.log_path(inst["name"]), lines)
            for inst in current.get("instances", [])
        }

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

    # -- the new version ----------------------------------------------------------------

    def start(self, image: str, instances: int | None = None) -> None:
        """``instances`` of ``image`` on the canary track (default: as many as stable runs).

        A new canary takes 0 %; a canary of ``image`` is kept and scaled; another is replaced.
        """
        with locked(self.layout):
            fleet, state = self._open()
            f = fleet.fleet
            count = instances or len((f.get("stable") or {}).get("instances", [])) or DEFAULT_INSTANCES
            _check_count(CANARY, count, 1, f["slots"][CANARY])
            current = f.get("canary")
            if current and current["image"] == image:
                if current.get("failed") or len(current["instances"]) == count:
                    self.progress(f"canary {image} already deployed; keeping it")
                    return
                self._scale(fleet, state, CANARY, count)
                return
            if current:
                self.progress(f"replacing canary {current['image']} with {image}")
                self._remove_canary(fleet)
            lookup = resolve_image(self.layout, fleet.catalog, image)
            canary: dict[str, Any] = {
                "image": image,
                "version": lookup.version.tag if lookup.version else None,
                "deployment": new_deployment_id(),
                "deployed_at": time.time(),
                "instances": [],
                "failed": None,
            }
            f["canary"] = canary
            f["weight"] = 0
            if lookup.version is None:
                canary["failed"] = lookup.reason
                save_state(self.layout, state)
                self.progress(f"canary {image}: {lookup.reason}")
                return
            fleet.add_instances(CANARY, count)
            fleet.apply_routing()
            fleet.write_targets()
            save_state(self.layout, state)
            self.progress(f"canary {image}: started {count} instance(s) at 0 %")

    def readiness(self) -> Readiness:
        """Every canary instance answers /healthz and is UP in HAProxy; or failed for good, with why.

        Probes without the lock (a slow probe never delays an abort); a canary found
        crashed is marked failed and taken out of rotation under it.
        """
        fleet, _ = self._open()
        canary = fleet.fleet.get("canary")
        if not canary:
            return Readiness(False, True, "no canary is deployed")
        if canary.get("failed"):
            return Readiness(False, True, canary["failed"])
        for inst in canary["instances"]:
            exited = fleet.instance_exit(inst)
            if exited:
                return self._mark_failed(canary["deployment"], f"canary {canary['image']}: {exited}")
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

    def _mark_failed(self, deployment: str, reason: str) -> Readiness:
        with locked(self.layout):
            fleet, state = self._open()
            canary = fleet.fleet.get("canary")
            if not canary or canary["deployment"] != deployment:
                return Readiness(False, True, reason)  # replaced meanwhile; this one failed all the same
            if not canary.get("failed"):
                canary["failed"] = reason
                fleet.fleet["weight"] = 0
                fleet.close_preview()
                fleet.apply_routing()
                fleet.write_targets()
                save_state(self.layout, state)
            return Readiness(False, True, canary["failed"])

    # -- instances ----------------------------------------------------------------------

    def scale(self, track: str, instances: int) -> None:
        """A track to ``instances`` processes: stable 1..8, canary 0..8 (0 removes it)."""
        if track not in (STABLE, CANARY):
            raise SandboxError(f"unknown track {track!r}: expected stable or canary")
        with locked(self.layout):
            fleet, state = self._open()
            _check_count(track, instances, 1 if track == STABLE else 0, fleet.fleet["slots"][track])
            if track == CANARY and instances == 0:
                self._remove_canary(fleet)
                save_state(self.layout, state)
                return
            current = fleet.fleet.get(track)
            if not current:
                raise SandboxError(
                    f"cannot scale the {track} track: nothing runs on it (start a version first)"
                )
            if track == CANARY and current.get("failed"):
                raise SandboxError(f"cannot scale canary {current['image']}: {current['failed']}")
            self._scale(fleet, state, track, instances)

    def _scale(self, fleet: Fleet, state: dict[str, Any], track: str, instances: int) -> None:
        current = fleet.fleet[track]
        have = len(current["instances"])
        if instances > have:
            started = fleet.add_instances(track, instances - have)
            # Instances join the traffic only once they answer (a canary at 0 % may join at once).
            if track == STABLE or fleet.fleet["weight"] > 0:
                try:
                    fleet.wait_healthy(started)
                except SandboxError as exc:
                    if track == STABLE:
                        current["instances"] = [i for i in current["instances"] if i not in started]
                        save_state(self.layout, state)
                        fleet.stop_instances(started)
                        raise
                    current["failed"] = f"canary {current['image']}: {exc}"
                    fleet.fleet["weight"] = 0
                    fleet.close_preview()
        elif instances < have:
            gone = sorted(current["instances"], key=lambda i: i["slot"] or "")[instances - have :]
            current["instances"] = [i for i in current["instances"] if i not in gone]
        else:
            return
        if track == STABLE:
            fleet.fleet["stable_instances"] = instances
        fleet.apply_routing()
        fleet.write_targets()
        save_state(self.layout, state)
        if instances < have:
            fleet.stop_instances(gone)
        self.progress(f"{track} {current['image']}: {have} -> {instances} instance(s)")

    def restart(self, track: str = STABLE) -> list[str]:
        """Replace the instances of ``track`` that are not running or do not answer /healthz.

        Each is stopped (if its process still runs) and a new process of the same version
        and deployment takes its slot; they must answer before the routing points at them.
        Returns ``"<old> (pid <n>): <why> -> <new> (pid <m>)"`` per instance; all answering: ``[]``.
        """
        if track not in (STABLE, CANARY):
            raise SandboxError(f"unknown track {track!r}: expected stable or canary")
        with locked(self.layout):
            fleet, state = self._open()
            current = fleet.fleet.get(track)
            if not current or not current.get("instances"):
                raise SandboxError(f"cannot restart the {track} track: nothing runs on it")
            if track == CANARY and current.get("failed"):
                raise SandboxError(f"cannot restart canary {current['image']}: {current['failed']}")
            version = fleet.catalog.get(current["version"])
            if version is None:
                raise SandboxError(
                    f"version {current['version']} is no longer declared in {fleet.catalog.source}"
                )
            down = []
            for inst in current["instances"]:
                why = fleet.instance_exit(inst)
                if why is None and not http_ok(inst["port"]):
                    why = f"process {inst['name']} (pid {inst.get('pid')}) does not answer /healthz"
                if why:
                    down.append((inst, why))
            if not down:
                self.progress(f"{track} {current['image']}: every instance answers; nothing restarted")
                return []
            fleet.stop_instances([inst for inst, _ in down])
            lines, started = [], []
            for inst, why in down:
                index = 1 + max(int(i["name"].rsplit("-", 1)[1]) for i in current["instances"])
                new = fleet.start_instance(version, current["deployment"], index, inst["slot"])
                current["instances"][current["instances"].index(inst)] = new
                save_state(self.layout, state)
                started.append(new)
                lines.append(f"{why.split(';')[0]} -> {new['name']} (pid {new['pid']})")
            fleet.wait_healthy(started)
            fleet.apply_routing()
            fleet.write_targets()
            save_state(self.layout, state)
            self.progress(f"{track} {current['image']}: restarted {len(started)} instance(s)")
            return lines

    def remove_canary(self) -> None:
        """Weight 0 first, then the canary's processes stop; nothing deployed: nothing to do."""
        with locked(self.layout):
            fleet, state = self._open()
            canary = fleet.fleet.get("canary")
            self._remove_canary(fleet)
            save_state(self.layout, state)
            if canary:
                self.progress(f"removed canary {canary['image']}")

    def _remove_canary(self, fleet: Fleet) -> None:
        canary = fleet.fleet.get("canary")
        fleet.fleet["weight"] = 0
        fleet.close_preview()
        fleet.apply_routing()  # canary slots weight 0 (stable up first), preview slots parked
        if canary:
            instances = canary["instances"]
            fleet.fleet["canary"] = None
            fleet.apply_routing()  # canary slots to maint
            fleet.write_targets()
            fleet.stop_instances(instances)

    def promote(self) -> None:
        """The canary's processes become the stable fleet at 100 %; the old stable's stop."""
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
            if fleet.catalog.get(canary["version"]) is None:
                raise SandboxError(f"cannot promote: version {canary['version']} is no longer declared")
            old_stable = f["stable"]["instances"] if f.get("stable") else []
            # The stable slots will point at these: they must answer before they get 100 %.
            fleet.wait_healthy(canary["instances"])
            stable_names = hap.slot_names(STABLE, f["slots"][STABLE])
            ordered = sorted(canary["instances"], key=lambda i: i["slot"] or "")
            new_stable = [{**inst, "slot": stable_names[i]} for i, inst in enumerate(ordered)]
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
            fleet.close_preview()
            fleet.apply_routing()
            fleet.write_targets()
            save_state(self.layout, state)
            fleet.stop_instances(old_stable)
            self.progress(f"promoted {canary['image']} to stable at 100 %")


def _check_count(track: str, count: int, least: int, slots: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or not least <= count <= slots:
        raise SandboxError(f"{track} instances must be between {least} and {slots}, got {count!r}")

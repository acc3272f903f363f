"""What the demo fleet runs now, as typed values: the one reading of the fleet's state.

``read_fleet_status`` turns ``state.json`` plus live checks (is each process running,
what HAProxy reports per slot) into a ``FleetStatus``. The sandbox platform driver reads
it through ``FleetController.status()``; the CLI's ``status`` prints it and its JSON
(``to_dict``) is the ``stable``/``canary``/``canary_weight``/``traffic`` part of
``python -m opsdag.sandbox status --json``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opsdag.dev.sandbox import haproxy_server as hap
from opsdag.dev.sandbox.fleet import CANARY, STABLE
from opsdag.dev.sandbox.preview_status import PreviewStatus, read_preview
from opsdag.dev.sandbox.processes import ProcessTable
from opsdag.dev.sandbox.state import Layout, read_counts


@dataclass(frozen=True)
class InstanceStatus:
    """One demo-app process: the HAProxy slot it serves and whether it runs."""

    name: str
    port: int
    slot: str | None
    version: str
    pid: int | None
    running: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "port": self.port,
            "slot": self.slot,
            "version": self.version,
            "pid": self.pid,
            "running": self.running,
        }


@dataclass(frozen=True)
class TrackStatus:
    """The processes of one version on one track (stable or canary)."""

    image: str | None
    version: str | None
    deployment: str | None
    instances: tuple[InstanceStatus, ...] = ()
    failed: str | None = None  # a canary that will never be ready: why


@dataclass(frozen=True)
class ServerStatus:
    """One HAProxy server slot as HAProxy reports it."""

    name: str
    track: str
    status: str | None
    weight: int
    addr: str | None
    responses: int
    responses_since_change: int
    check: str | None

    @property
    def up(self) -> bool:
        return (self.status or "").startswith("UP")

    def to_dict(self) -> dict[str, Any]:
        return {
            "track": self.track,
            "status": self.status,
            "weight": self.weight,
            "addr": self.addr,
            "responses": self.responses,
            "responses_since_change": self.responses_since_change,
            "check": self.check,
        }


@dataclass(frozen=True)
class MeasuredSplit:
    """Responses per track counted by HAProxy since the last routing change, in percent."""

    stable: float | None
    canary: float | None
    responses: Mapping[str, int]
    since: float | None
    window_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            STABLE: self.stable,
            CANARY: self.canary,
            "responses": dict(self.responses),
            "since": self.since,
            "window_s": self.window_s,
        }


@dataclass(frozen=True)
class TrafficStatus:
    """The configured split (the canary's weight) and, when HAProxy answers, the measured one."""

    canary_weight: int
    measured: MeasuredSplit | None
    servers: Mapping[str, ServerStatus] = field(default_factory=dict)
    error: str | None = None  # HAProxy's runtime API did not answer

    @property
    def configured(self) -> dict[str, int]:
        return {STABLE: 100 - self.canary_weight, CANARY: self.canary_weight}

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "configured": self.configured,
            "measured": self.measured.to_dict() if self.measured else None,
        }
        if self.error is not None:
            result["error"] = self.error
        else:
            result["haproxy_servers"] = {name: server.to_dict() for name, server in self.servers.items()}
        return result


@dataclass(frozen=True)
class FleetStatus:
    """Stable and canary versions, their processes, the traffic split and where to reach them."""

    sandbox_dir: str
    service: str | None
    stable: TrackStatus | None
    canary: TrackStatus | None
    canary_weight: int
    traffic: TrafficStatus | None  # None while HAProxy does not run
    frontend_url: str | None
    prometheus_url: str | None
    preview: PreviewStatus | None = None  # blue-green's preview route

    @property
    def stable_healthy(self) -> bool:
        """Every stable process runs and HAProxy sees its slot UP."""
        instances = self.stable.instances if self.stable else ()
        servers = self.traffic.servers if self.traffic else {}

        def up(inst: InstanceStatus) -> bool:
            server = servers.get(inst.slot or "")
            return server is not None and server.up

        return bool(instances) and all(inst.running and up(inst) for inst in instances)

    def to_dict(self) -> dict[str, Any]:
        stable = self.stable or TrackStatus(None, None, None)
        canary = self.canary
        return {
            "service": self.service,
            "stable": {
                "version": stable.version,
                "image": stable.image,
                "deployment": stable.deployment,
                "instances": [inst.to_dict() for inst in stable.instances],
            },
            "canary": (
                {
                    "version": canary.version,
                    "image": canary.image,
                    "deployment": canary.deployment,
                    "failed": canary.failed,
                    "instances": [inst.to_dict() for inst in canary.instances],
                }
                if canary
                else None
            ),
            "canary_weight": self.canary_weight,
            "traffic": self.traffic.to_dict() if self.traffic else None,
            "preview": self.preview.to_dict() if self.preview else None,
        }


def measure_traffic(
    rows: Mapping[str, Mapping[str, str]], baseline: Mapping[str, Any], canary_weight: int, now: float
) -> TrafficStatus:
    """The split HAProxy served since ``baseline`` (per-slot response counters at the last change).

    A counter below its baseline means HAProxy restarted since: its whole count is new.
    Parked slots (MAINT) that served nothing are left out.
    """
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
        servers[name] = ServerStatus(
            name=name,
            track=track,
            status=row.get("status"),
            weight=int(row.get("weight") or 0),
            addr=row.get("addr"),
            responses=total,
            responses_since_change=since,
            check=row.get("check_status"),
        )
    total = counts[STABLE] + counts[CANARY]
    measured = MeasuredSplit(
        stable=round(100 * counts[STABLE] / total, 1) if total else None,
        canary=round(100 * counts[CANARY] / total, 1) if total else None,
        responses=counts,
        since=baseline.get("at"),
        window_s=round(now - baseline.get("at", now), 1),
    )
    return TrafficStatus(canary_weight, measured, servers)


def read_backends(socket: str) -> tuple[dict[str, dict[str, dict[str, str]]], str | None]:
    """HAProxy's server rows per backend (one ``show stat``), or the error that kept it from answering."""
    try:
        return hap.HAProxyRuntime(socket).backends(), None
    except hap.HAProxyError as exc:
        return {}, str(exc)


def _track(procs: ProcessTable, track: Mapping[str, Any] | None) -> TrackStatus | None:
    if not track:
        return None
    instances = []
    for inst in track.get("instances", []):
        record = procs.read(inst["name"])
        running = record is not None and procs.alive(record)
        instances.append(
            InstanceStatus(
                inst["name"], inst["port"], inst.get("slot"), inst["version"], inst.get("pid"), running
            )
        )
    return TrackStatus(
        image=track.get("image"),
        version=track.get("version"),
        deployment=track.get("deployment"),
        instances=tuple(instances),
        failed=track.get("failed"),
    )


def read_fleet_status(layout: Layout, state: Mapping[str, Any]) -> FleetStatus:
    """The fleet of a loaded ``state`` (which has one), checked against what really runs."""
    fleet = state["fleet"]
    procs = layout.processes()
    haproxy = state.get("haproxy", {})
    record = procs.read("haproxy")
    running = record is not None and procs.alive(record)
    frontend = haproxy.get("frontend_port")
    backends, error = read_backends(haproxy["socket"]) if running else ({}, None)
    if not running:
        traffic = None
    elif error is not None:
        traffic = TrafficStatus(fleet["weight"], None, error=error)
    else:
        rows = backends.get(hap.BACKEND, {})
        traffic = measure_traffic(rows, fleet.get("baseline", {}), fleet["weight"], time.time())
    preview = read_preview(
        fleet, haproxy.get("preview_port"), backends.get(hap.PREVIEW_BACKEND, {}), read_counts(layout)
    )
    return FleetStatus(
        sandbox_dir=str(layout.root),
        service=fleet.get("service"),
        stable=_track(procs, fleet.get("stable")),
        canary=_track(procs, fleet.get("canary")),
        canary_weight=fleet.get("weight", 0),
        traffic=traffic,
        frontend_url=f"http://127.0.0.1:{frontend}/" if frontend else None,
        prometheus_url=state.get("prometheus", {}).get("url"),
        preview=preview,
    )

"""The sandbox's workload driver: demo-app processes on this machine (``platform.kind: sandbox``).

A thin adapter over ``opsdag.dev.sandbox.controller.FleetController`` (with the HAProxy
router, the only runtime modules that import ``opsdag.dev``), reading its typed
``FleetStatus``: all state (ports, admin socket, which processes serve which track) lives
in the sandbox state directory, so an Airflow task that starts a version and a later task
or trigger (another process) that promotes it see the same fleet. Processes it starts are
detached (own session, logs in the state directory) and outlive the task.

Image references are ``<repository>:<tag>``, whose tag must be declared in
``include/sandbox/versions.yaml``, or ``<repository>@sha256:<digest>``: a digest declared
there, or an image in the sandbox's registry whose ``org.opencontainers.image.version``
label names a declared version (``opsdag.dev.sandbox.image_resolution``). Anything else
behaves as an image that cannot be pulled: ``resolve_image`` says so, and a canary of it is
failed. Builds push to the sandbox's registry through ``push_repository``: the spec's
``registry.opsdag.local/<name>`` resolves nowhere, the registry serves it at
``127.0.0.1:<port>/<name>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from opsdag.dev.sandbox import haproxy_server as hap
from opsdag.dev.sandbox.controller import FleetController
from opsdag.dev.sandbox.fleet import CANARY, STABLE
from opsdag.dev.sandbox.fleet_status import FleetStatus, TrackStatus
from opsdag.dev.sandbox.routing import RoutingController
from opsdag.dev.sandbox.state import Layout, SandboxError, SandboxNotRunning
from opsdag.platforms.base import (
    ImageResolution,
    Readiness,
    RollbackTarget,
    Track,
    TrackState,
    WorkloadDriver,
    WorkloadStatus,
)

__all__ = [
    "SandboxDriver",
    "SandboxError",
    "SandboxNotRunning",
    "fleet_controller",
    "routing_controller",
]

# HAProxy status words of a server whose checks pass (NOLB/DRAIN: passing, weight 0 or draining).
_CHECKS_PASS = ("UP", "NOLB", "DRAIN")


def fleet_controller(
    service_name: str, sandbox_dir: Path | None, check_service: bool = True
) -> FleetController:
    """The controller of the sandbox in ``sandbox_dir`` (default ``$OPSDAG_SANDBOX_DIR``), read now.

    ``check_service``: refuse a sandbox hosting another service than ``service_name``.
    """
    layout = Layout(sandbox_dir.resolve()) if sandbox_dir is not None else Layout.default()
    controller = FleetController(layout)
    if check_service:
        hosted = controller.hosted_service()
        if hosted != service_name:
            raise SandboxError(f"the sandbox in {layout.root} hosts service {hosted!r}, not {service_name!r}")
    return controller


def routing_controller(service_name: str, sandbox_dir: Path | None) -> RoutingController:
    """The traffic side of the same sandbox, after the same check of the service it hosts."""
    return RoutingController(fleet_controller(service_name, sandbox_dir).layout)


class SandboxDriver(WorkloadDriver):
    """Workload driver of the embedded sandbox.

    :param service_name: the service; must be the one the sandbox hosts (``service`` in
        versions.yaml, ``demo-api``).
    :param sandbox_dir: state directory of a running sandbox (default: ``paths.sandbox_dir()``,
        i.e. ``$OPSDAG_SANDBOX_DIR``), read on every call, never in ``__init__``.
    """

    kind = "sandbox"

    def __init__(self, *, service_name: str = "demo-api", sandbox_dir: str | Path | None = None) -> None:
        self.service_name = service_name
        self.sandbox_dir = Path(sandbox_dir) if sandbox_dir is not None else None

    @classmethod
    def from_spec(cls, spec: Any) -> Self:
        return cls(service_name=spec.name)

    def _controller(self, check_service: bool = True) -> FleetController:
        return fleet_controller(self.service_name, self.sandbox_dir, check_service)

    def status(self) -> WorkloadStatus:
        fleet = self._controller().status()
        return WorkloadStatus(
            stable=_track_state(fleet, fleet.stable),
            canary=_track_state(fleet, fleet.canary),
            capacity=2 * hap.MAX_SLOTS,
            track_capacity=hap.MAX_SLOTS,
            details=_details(fleet),
        )

    def resolve_image(self, image: str) -> ImageResolution:
        lookup = self._controller(check_service=False).resolve(image)
        version = lookup.version
        return ImageResolution(
            reference=image,
            pullable=version is not None,
            reason=lookup.reason,
            digest=(lookup.digest or version.digest) if version else None,
        )

    def push_repository(self, repository: str) -> str:
        """Where a build pushes images the sandbox pulls as ``repository``:
        ``registry.opsdag.local/demo-api`` -> ``127.0.0.1:<port>/demo-api`` (its registry).

        Raises ``SandboxError`` (a ``PlatformError``) when the sandbox or its registry is not
        running, or when ``repository`` is on a registry the sandbox never pulls from.
        """
        return self._controller(check_service=False).push_repository(repository)

    def start(self, image: str, instances: int) -> None:
        self._controller().start(image, instances)

    def readiness(self) -> Readiness:
        return self._controller().readiness()

    def scale(self, track: Track, instances: int) -> None:
        self._controller().scale(track, instances)

    def remove(self, track: Track = CANARY) -> None:
        if track == STABLE:
            raise SandboxError("the sandbox keeps its stable version running; promote() replaces it")
        self._controller().remove_canary()

    def promote(self) -> None:
        self._controller().promote()

    def restart(self, track: Track = STABLE) -> list[str]:
        return self._controller().restart(track)

    def logs(self, track: Track = STABLE, lines: int = 20) -> dict[str, str]:
        return self._controller().logs(track, lines)

    def rollback_target(self) -> RollbackTarget:
        fleet = self._controller().status()
        if fleet.stable is None or fleet.stable.image is None:
            raise SandboxError(f"the sandbox in {fleet.sandbox_dir} runs no stable version to return to")
        return RollbackTarget(fleet.stable.image, len(fleet.stable.instances), fleet.canary_weight)

    def metric_selectors(self) -> dict[str, str]:
        """Matchers substituted for ``$canary`` / ``$stable`` in analysis queries.

        The canary's includes its version and deployment id, so series of an earlier canary
        (still inside a rate() window after a rollback) never count for a new one.
        """
        selectors = self._controller(check_service=False).selectors()
        return {"canary": selectors[CANARY], "stable": selectors[STABLE]}

    def endpoints(self, track: Track) -> list[str]:
        return self._controller().endpoints(track)


def _track_state(fleet: FleetStatus, track: TrackStatus | None) -> TrackState | None:
    if track is None or track.image is None:
        return None
    servers = fleet.traffic.servers if fleet.traffic else {}

    def ready(slot: str | None) -> bool:
        server = servers.get(slot or "")
        return server is not None and (server.status or "").startswith(_CHECKS_PASS)

    ready_count = sum(1 for inst in track.instances if inst.running and ready(inst.slot))
    return TrackState(track.image, len(track.instances), ready_count, track.failed)


def _details(fleet: FleetStatus) -> dict[str, Any]:
    stable, canary, traffic = fleet.stable, fleet.canary, fleet.traffic
    return {
        "platform": "sandbox",
        "sandbox_dir": fleet.sandbox_dir,
        "stable_version": stable.version if stable else None,
        "canary_version": canary.version if canary else None,
        "canary_failed": canary.failed if canary else None,
        "traffic": {
            "configured": traffic.configured if traffic else None,
            "measured": traffic.measured.to_dict() if traffic and traffic.measured else None,
        },
        "haproxy_frontend": fleet.frontend_url,
        "prometheus_url": fleet.prometheus_url,
    }

"""The sandbox platform: demo-app processes behind HAProxy on this machine.

The driver is a thin adapter over ``opsdag.dev.sandbox.controller.FleetController`` (the
only runtime module that imports ``opsdag.dev``), reading its typed ``FleetStatus``: all state
(ports, admin socket, which processes serve which track) lives in the sandbox state
directory, so an Airflow task that deploys a canary and a later task (another process)
that promotes it see the same fleet. Processes it starts are detached (own session,
logs in the state directory) and outlive the task.

Image references are ``<repository>:<tag>``; only the tag counts and must be declared in
``include/sandbox/versions.yaml``. Any other tag behaves as an image that cannot be
pulled: ``canary_readiness()`` reports it failed, with the reason.
"""

from __future__ import annotations

from pathlib import Path

from opsdag.dev.sandbox.controller import FleetController
from opsdag.dev.sandbox.fleet import CANARY, STABLE
from opsdag.dev.sandbox.state import Layout, SandboxError, SandboxNotRunning
from opsdag.platforms.base import CanaryReadiness, Platform, PlatformStatus

__all__ = ["SandboxError", "SandboxNotRunning", "SandboxPlatform"]


class SandboxPlatform(Platform):
    """Platform driver for the embedded sandbox.

    :param service_name: name of the service; must be the one the sandbox hosts
        (``service`` in versions.yaml, ``demo-api``).
    :param sandbox_dir: state directory of a running sandbox (default: ``paths.sandbox_dir()``,
        i.e. ``$OPSDAG_SANDBOX_DIR``), read on every call, never in ``__init__``.
    :param instances: processes per version (the service spec's ``platform.instances``):
        a canary starts this many, and after promotion they are the stable fleet
        (default: as many as the stable version runs; at most 8).
    """

    def __init__(
        self,
        service_name: str = "demo-api",
        sandbox_dir: str | Path | None = None,
        instances: int | None = None,
    ) -> None:
        self.service_name = service_name
        self.sandbox_dir = Path(sandbox_dir) if sandbox_dir is not None else None
        self.instances = instances

    def _controller(self, check_service: bool = True) -> FleetController:
        layout = Layout(self.sandbox_dir.resolve()) if self.sandbox_dir is not None else Layout.default()
        controller = FleetController(layout)
        if not check_service:
            return controller
        hosted = controller.hosted_service()
        if hosted != self.service_name:
            raise SandboxError(
                f"the sandbox in {layout.root} hosts service {hosted!r}, not {self.service_name!r}"
            )
        return controller

    def status(self) -> PlatformStatus:
        fleet = self._controller().status()
        stable, canary, traffic = fleet.stable, fleet.canary, fleet.traffic
        return PlatformStatus(
            stable_image=stable.image if stable else None,
            canary_image=canary.image if canary else None,
            canary_weight=fleet.canary_weight,
            stable_healthy=fleet.stable_healthy,
            details={
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
            },
        )

    def deploy_canary(self, image: str) -> None:
        self._controller().deploy_canary(image, self.instances)

    def canary_readiness(self) -> CanaryReadiness:
        readiness = self._controller().canary_readiness()
        return CanaryReadiness(ready=readiness.ready, failed=readiness.failed, reason=readiness.reason)

    def set_canary_weight(self, percent: int) -> None:
        self._controller().set_canary_weight(percent)

    def promote(self) -> None:
        self._controller().promote()

    def rollback(self) -> None:
        self._controller().rollback()

    def metric_selectors(self) -> dict[str, str]:
        """Matchers substituted for ``$canary`` / ``$stable`` in analysis queries.

        The canary's includes its version and deployment id, so series of an earlier canary
        (still inside a rate() window after a rollback) never count for a new one.
        """
        selectors = self._controller(check_service=False).selectors()
        return {"canary": selectors[CANARY], "stable": selectors[STABLE]}

"""The sandbox platform: demo-app processes behind HAProxy on this machine.

The driver is a thin adapter over ``opsdag.dev.sandbox.fleet.FleetController``: all state
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

from opsdag.dev.sandbox.control import status as sandbox_status
from opsdag.dev.sandbox.fleet import CANARY, STABLE, FleetController
from opsdag.dev.sandbox.state import Layout, SandboxError, SandboxNotRunning
from opsdag.platforms.base import CanaryReadiness, Platform, PlatformStatus

__all__ = ["SandboxError", "SandboxNotRunning", "SandboxPlatform"]


class SandboxPlatform(Platform):
    """Platform driver for the embedded sandbox.

    :param service: name of the service; must be the one the sandbox hosts
        (``service`` in versions.yaml, ``demo-api``).
    :param sandbox_dir: state directory of a running sandbox (default: ``paths.sandbox_dir()``,
        i.e. ``$OPSDAG_SANDBOX_DIR``), read on every call, never in ``__init__``.
    :param instances: processes per version (the service spec's ``platform.instances``):
        a canary starts this many, and after promotion they are the stable fleet
        (default: as many as the stable version runs; at most 8).
    :param canary_instances: alias of ``instances``.
    """

    def __init__(
        self,
        service: str = "demo-api",
        sandbox_dir: str | Path | None = None,
        instances: int | None = None,
        canary_instances: int | None = None,
    ) -> None:
        self.service = service
        self.sandbox_dir = Path(sandbox_dir) if sandbox_dir is not None else None
        self.instances = instances if instances is not None else canary_instances

    def _controller(self, check_service: bool = True) -> FleetController:
        layout = Layout(self.sandbox_dir.resolve()) if self.sandbox_dir is not None else Layout.default()
        controller = FleetController(layout)
        if not check_service:
            return controller
        hosted = controller.hosted_service()
        if hosted != self.service:
            raise SandboxError(f"the sandbox in {layout.root} hosts service {hosted!r}, not {self.service!r}")
        return controller

    def status(self) -> PlatformStatus:
        controller = self._controller()
        st = sandbox_status(layout=controller.layout)
        stable = st.get("stable") or {}
        canary = st.get("canary")
        instances = stable.get("instances", [])
        traffic = st.get("traffic") or {}
        servers = traffic.get("haproxy_servers") or {}
        stable_up = all((servers.get(i["slot"], {}).get("status") or "").startswith("UP") for i in instances)
        return PlatformStatus(
            stable_image=stable.get("image"),
            canary_image=canary["image"] if canary else None,
            canary_weight=int(st.get("canary_weight") or 0),
            stable_healthy=bool(instances) and all(i["running"] for i in instances) and stable_up,
            details={
                "platform": "sandbox",
                "sandbox_dir": st["sandbox_dir"],
                "stable_version": stable.get("version"),
                "canary_version": canary.get("version") if canary else None,
                "canary_failed": canary.get("failed") if canary else None,
                "traffic": {
                    "configured": traffic.get("configured"),
                    "measured": traffic.get("measured"),
                },
                "haproxy_frontend": (st.get("haproxy") or {}).get("frontend_url"),
                "prometheus_url": (st.get("prometheus") or {}).get("url"),
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

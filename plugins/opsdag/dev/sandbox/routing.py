"""Traffic on the sandbox fleet: the canary's weight and blue-green's preview route, through HAProxy.

``RoutingController`` changes the fleet's state under the sandbox lock and applies it with
ONE HAProxy runtime call (``fleet.Fleet.apply_routing``); ``routing()`` reads back, without
the lock, what HAProxy has in force. ``opsdag.platforms.routers.haproxy.HaproxyRouter`` is
thin over it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from opsdag.dev.sandbox import haproxy_server as hap
from opsdag.dev.sandbox.fleet import FleetSession
from opsdag.dev.sandbox.haproxy_server import RoutingChange
from opsdag.dev.sandbox.loadgen import CONTROL_POLL_S
from opsdag.dev.sandbox.preview_status import preview_ports, reaches_canary
from opsdag.dev.sandbox.processes import wait_until
from opsdag.dev.sandbox.state import (
    SandboxError,
    locked,
    read_counts,
    save_state,
)

# The most of the load generator's requests the preview route may take.
MAX_PREVIEW_SHARE = 0.5


@dataclass(frozen=True)
class RoutingView:
    """HAProxy's server rows as they are now (main and preview backends), and what the state asked for."""

    servers: dict[str, dict[str, str]]
    preview_servers: dict[str, dict[str, str]]
    requested: int
    canary_ports: tuple[int, ...]

    @property
    def preview_reaches_canary(self) -> bool:
        """The preview route's servers in rotation are exactly the canary's processes (and there are some)."""
        return reaches_canary(preview_ports(self.preview_servers), self.canary_ports)


class RoutingController(FleetSession):
    """The canary's share of the main route and the preview route; each change holds the sandbox lock."""

    def routing(self) -> RoutingView:
        """HAProxy's rows of the main backend, read back now (raises ``HAProxyError`` if it is down)."""
        fleet, _ = self._open()
        backends = fleet.runtime().backends()
        return RoutingView(
            servers=backends.get(hap.BACKEND, {}),
            preview_servers=backends.get(hap.PREVIEW_BACKEND, {}),
            requested=fleet.fleet.get("weight", 0),
            canary_ports=tuple(inst["port"] for inst in fleet.active_canary()),
        )

    def set_weight(self, percent: int) -> RoutingChange:
        """``percent`` of the main route's requests to the canary, in one HAProxy call."""
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
            change = fleet.apply_routing()
            save_state(self.layout, state)
            self.progress(f"canary weight set to {percent} % ({len(change.commands)} command(s) in one call)")
            return change

    def set_preview(self, enabled: bool, share: float = 0.0) -> RoutingChange:
        """Open the preview route on the canary (the load generator sends it ``share`` of its
        requests), or close it. Opening needs a canary that is not failed.

        Closing first tells the load generator to stop sending there and waits (at most 2 s)
        until its counts show it did, then parks the route's servers: it meets no 503 from
        an empty backend.
        """
        if enabled and not 0 < share <= MAX_PREVIEW_SHARE:
            raise SandboxError(
                f"preview share must be above 0 and at most {MAX_PREVIEW_SHARE}, got {share!r}"
            )
        if not enabled and self._stop_preview_load():
            self._wait_preview_load_stopped(time.time())
        with locked(self.layout):
            fleet, state = self._open()
            canary = fleet.fleet.get("canary")
            if enabled:
                if not canary:
                    raise SandboxError("cannot open the preview route: no canary is deployed")
                if canary.get("failed"):
                    raise SandboxError(
                        f"cannot open the preview route to {canary['image']}: {canary['failed']}"
                    )
            fleet.fleet["preview"] = {"enabled": enabled, "share": float(share) if enabled else 0.0}
            change = fleet.apply_routing()
            fleet.write_loadgen_control()
            save_state(self.layout, state)
            what = f"open on {canary['image']}, {share:.0%} of the load" if enabled else "closed"
            self.progress(f"preview route {what}")
            return change

    def _wait_preview_load_stopped(self, since: float, timeout: float = 2.0) -> None:
        """Until the load generator's counts (written after ``since``) show it sends the preview nothing.

        Bounded: a load generator that does not run, or lags, only costs ``timeout``.
        """
        wait_until(
            lambda: (
                (c := read_counts(self.layout)) is not None
                and c.get("updated_at", 0) > since + CONTROL_POLL_S
                and (c.get("preview") or {}).get("share", 0) == 0
            ),
            timeout,
        )

    def _stop_preview_load(self) -> bool:
        """The load generator's preview share to 0, the route left open; whether it had a share."""
        with locked(self.layout):
            fleet, state = self._open()
            preview = fleet.preview()
            if not (preview["enabled"] and preview["share"] > 0):
                return False
            preview["share"] = 0.0
            fleet.write_loadgen_control()
            save_state(self.layout, state)
            return True

"""The sandbox's HAProxy as a traffic router (``platform.router.kind: haproxy``), with a preview route.

Weights change through HAProxy's runtime API, never by reloading: every change is ONE
call (``set server ...; set server ...``) that HAProxy runs without serving another
client in between. ``verify_weight`` reads the per-server weights and states back from
``show stat`` and says what share of requests each track gets now. Thin over
``opsdag.dev.sandbox.routing.RoutingController``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from opsdag.platforms.base import CANARY, Track, TrafficRouter, TrafficSplit
from opsdag.platforms.sandbox import routing_controller
from opsdag.platforms.weights import share_in_force, split_is_exact

if TYPE_CHECKING:
    from opsdag.dev.sandbox.routing import RoutingController

# ``show stat`` statuses of a server that takes new requests ("UP 1/2": up, one failed check).
_TAKES_TRAFFIC = ("UP", "no check")
DEFAULT_PREVIEW_SHARE = 0.05


def split_from_rows(
    servers: Mapping[str, Mapping[str, str]], requested: int, preview: bool = False
) -> TrafficSplit:
    """The split HAProxy's server rows put in force: weights of the servers that take traffic.

    Servers are named for their track (``stable1``, ``canary3``); one down, in maintenance
    or draining takes nothing, whatever its weight.
    """
    weights: dict[str, list[int]] = {"stable": [], "canary": []}
    for name, row in servers.items():
        track = "canary" if name.startswith("canary") else "stable" if name.startswith("stable") else None
        status = row.get("status") or ""
        if track is None or not status.startswith(_TAKES_TRAFFIC):
            continue
        weight = row.get("weight") or "0"
        weights[track].append(int(weight) if weight.isdigit() else 0)
    stable, canary = share_in_force(weights["stable"], weights["canary"])
    return TrafficSplit(
        stable=stable,
        canary=canary,
        exact=split_is_exact(canary, requested) and stable + canary > 0,
        preview=preview,
        requested=requested,
    )


class HaproxyRouter(TrafficRouter):
    """HAProxy in front of the sandbox fleet: per-server weights and a preview route.

    :param service_name: the service; must be the one the sandbox hosts.
    :param sandbox_dir: state directory of a running sandbox (default ``$OPSDAG_SANDBOX_DIR``).
    :param preview_share: share of the load generator's requests sent to the preview route
        when it opens without a share of its own (the spec's ``bluegreen.preview_share``).
    """

    kind = "haproxy"
    can_split = True
    can_preview = True

    def __init__(
        self,
        *,
        service_name: str = "demo-api",
        sandbox_dir: str | Path | None = None,
        preview_share: float = DEFAULT_PREVIEW_SHARE,
    ) -> None:
        self.service_name = service_name
        self.sandbox_dir = Path(sandbox_dir) if sandbox_dir is not None else None
        self.preview_share = preview_share
        #: seconds HAProxy took for the last change's runtime call, and how many commands it held
        self.last_call_s: float | None = None
        self.last_commands = 0

    @classmethod
    def from_spec(cls, spec: Any) -> Self:
        bluegreen = getattr(spec, "bluegreen", None)
        share = bluegreen.preview_share if bluegreen is not None else DEFAULT_PREVIEW_SHARE
        return cls(service_name=spec.name, preview_share=share)

    def _controller(self) -> RoutingController:
        return routing_controller(self.service_name, self.sandbox_dir)

    def set_weight(self, percent: int) -> None:
        change = self._controller().set_weight(percent)
        self.last_call_s, self.last_commands = change.seconds, len(change.commands)

    def switch(self, track: Track) -> None:
        """All traffic to ``track``: every slot's weight flips in the same single runtime call."""
        self.set_weight(100 if track == CANARY else 0)

    def verify_weight(self) -> TrafficSplit:
        view = self._controller().routing()
        return split_from_rows(view.servers, view.requested, preview=view.preview_reaches_canary)

    def set_preview(self, enabled: bool, share: float | None = None) -> None:
        """Open (or close) the preview route on the canary's processes, in one runtime call.

        While it is open, the sandbox's load generator sends it ``share`` of its requests
        (default: this router's ``preview_share``, the spec's ``bluegreen.preview_share``);
        the canary's metrics then come from those requests alone while its weight is 0.
        """
        chosen = self.preview_share if share is None else share
        change = self._controller().set_preview(enabled, chosen)
        self.last_call_s, self.last_commands = change.seconds, len(change.commands)

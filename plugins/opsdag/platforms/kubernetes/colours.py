"""Which colour of a blue-green layout is which, read from the cluster (``router: service-selector``).

The layout: ``<deployment>-blue`` and ``<deployment>-green``, labelled ``opsdag.io/colour``, an
active Service selecting one of them. A release's new colour is marked on its Deployment
(``opsdag.io/replaces: <stable colour>``), so any process reads the same answer: marked, that
colour is the canary track and the other the stable one; none marked, the colour the active
Service selects is stable and no canary runs. Shared by ``kubernetes.bluegreen`` (the driver)
and ``routers.service_selector`` (the router).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opsdag.platforms.base import STABLE, PlatformError, Track
from opsdag.platforms.kubernetes import manifests as mf
from opsdag.platforms.kubernetes.api import KubeApi

REPLACES = "opsdag.io/replaces"  # annotation on a release's new colour: the colour it replaces


@dataclass(frozen=True)
class Colours:
    """Who is who now, read in one go: the stable and the new colour, their Deployments, the
    active Service. ``marked``: the new colour runs as a release's (the canary track)."""

    base: str
    stable: str
    new: str
    marked: bool
    deployments: dict[str, dict[str, Any] | None]
    active: dict[str, Any]

    def name(self, track: Track) -> str:
        return mf.colour_name(self.base, self.stable if track == STABLE else self.new)

    def deployment(self, track: Track) -> dict[str, Any] | None:
        """A track's Deployment (the canary's only while a release's new colour runs)."""
        if track == STABLE:
            return self.deployments[self.stable]
        return self.deployments[self.new] if self.marked else None


def read_colours(api: KubeApi, base: str, active_service: str) -> Colours:
    """The colours of ``base`` as the cluster says; a PlatformError naming what is missing."""
    where = f"in namespace {api.namespace}"
    active = api.get("services", active_service)
    if active is None:
        raise PlatformError(
            f"get services/{active_service} {where}: not found "
            "(platform.router.active_service must name the Service that serves the service)"
        )
    deployments = {c: api.get("deployments", mf.colour_name(base, c)) for c in mf.COLOURS}
    marked = [
        colour
        for colour, found in deployments.items()
        if found is not None and annotations_of(found).get(REPLACES) == mf.other_colour(colour)
    ]
    if len(marked) > 1:
        raise PlatformError(
            f"both {mf.colour_name(base, 'blue')} and {mf.colour_name(base, 'green')} {where} carry "
            f"{REPLACES}: remove it from the one that serves"
        )
    if marked:
        new = marked[0]
        stable = mf.other_colour(new)
    else:
        selected = mf.colour_of(active, "selector")
        if selected is None:
            raise PlatformError(
                f"Service {api.namespace}/{active_service} selects no {mf.COLOUR_LABEL} (blue or green): "
                f"add it to the Service's selector and to the pods of {mf.colour_name(base, 'blue')}"
            )
        stable, new = selected, mf.other_colour(selected)
    if deployments[stable] is None:
        raise PlatformError(
            f"get deployments/{mf.colour_name(base, stable)} {where}: not found (the stable colour, "
            f"{stable}: platform.deployment {base!r} must have a -blue or -green Deployment that serves)"
        )
    return Colours(base, stable, new, bool(marked), deployments, active)


def annotations_of(obj: dict[str, Any]) -> dict[str, str]:
    return obj.get("metadata", {}).get("annotations") or {}

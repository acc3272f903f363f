"""Blue-green by Service selectors as a traffic router (``platform.router.kind: service-selector``).

The active Service (``platform.router.active_service``) sends all the traffic to one colour of
``platform.deployment`` (``opsdag.io/colour`` in its selector), the preview Service
(``platform.router.preview_service``) to the colour being judged; which colour is stable and
which is a release's new one is recorded on the cluster (``kubernetes.colours``).

- ``switch(track)`` is one JSON merge patch of the active Service's selector (its other labels
  kept), guarded by its ``resourceVersion``: all traffic moves at once.
- ``set_preview(True)`` points the preview Service at the new colour, ``False`` at the stable one.
- ``set_weight`` takes 0 (switch to stable) and 100 (switch to the new colour) only: a selector
  cannot split (``can_split = False``: the strategy choice refuses canary for this router).
- Nothing points a Service at the new colour unless its Deployment runs and all its pods are
  ready (the refusal says why); the stable colour's Deployment exists, or nothing is read.

``verify_weight`` reads the Services back: 100 or 0 % to the new colour, and whether the
preview Service reaches it.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from opsdag.platforms.base import CANARY, STABLE, PlatformError, Track, TrafficSplit
from opsdag.platforms.kubernetes import manifests as mf
from opsdag.platforms.kubernetes.bluegreen import BlueGreenDriver
from opsdag.platforms.kubernetes.colours import Colours
from opsdag.platforms.kubernetes.routing import KubeRouter


class ServiceSelectorRouter(KubeRouter):
    """The active and the preview Service's colour selector.

    :param namespace: ``platform.namespace`` (both Services and both colours' Deployments).
    :param deployment: ``platform.deployment``, the colours' base name.
    :param active_service: ``platform.router.active_service``.
    :param preview_service: ``platform.router.preview_service``.
    :param container: ``platform.container``.
    :param connection_id: ``platform.connection_id``.
    """

    kind = "service-selector"
    can_split = False
    can_preview = True

    def __init__(self, *, active_service: str, preview_service: str, **platform: Any) -> None:
        super().__init__(**platform)
        self.active_service = active_service
        self.preview_service = preview_service

    @cached_property
    def driver(self) -> BlueGreenDriver:
        """The colours' reader (without a router of its own: this router moves the traffic)."""
        return BlueGreenDriver(
            namespace=self.namespace,
            deployment=self.deployment,
            container=self.container,
            connection_id=self.connection_id,
            active_service=self.active_service,
        )

    @property
    def api(self) -> Any:
        return self.driver.api

    def switch(self, track: Track) -> None:
        colours = self.driver.colours()
        colour = self._servable(colours, track, "take all the traffic")
        self._select(self.active_service, colours.active, colour)

    def set_preview(self, enabled: bool, share: float | None = None) -> None:
        """``share`` is the sandbox's synthetic load: a cluster's preview gets what its users send."""
        colours = self.driver.colours()
        colour = self._servable(colours, CANARY if enabled else STABLE, "be previewed")
        self._select(self.preview_service, self._preview(), colour)

    def set_weight(self, percent: int) -> None:
        if percent in (0, 100) and not isinstance(percent, bool):
            self.switch(CANARY if percent == 100 else STABLE)
            return
        raise PlatformError(
            f"router service-selector switches all the traffic at once: 0 or 100 %, not {percent!r} "
            "(release with strategy bluegreen, or use a router that splits: gateway-api, nginx)"
        )

    def verify_weight(self) -> TrafficSplit:
        colours = self.driver.colours()
        to_new = mf.colour_of(colours.active, "selector") == colours.new
        preview = mf.colour_of(self._preview(), "selector") == colours.new
        share = 100.0 if to_new else 0.0
        return TrafficSplit(
            stable=100.0 - share, canary=share, exact=True, preview=preview, requested=int(share)
        )

    # -- helpers -----------------------------------------------------------------------------

    def _servable(self, colours: Colours, track: Track, purpose: str) -> str:
        """The colour of ``track``, once it is sure to serve: refused with the reason if not."""
        if track == STABLE:
            return colours.stable  # read_colours refused a stable colour without a Deployment
        if colours.deployment(CANARY) is None:
            raise PlatformError(
                f"no new colour of {self.deployment} runs in namespace {self.namespace}: "
                f"{colours.name(CANARY)} cannot {purpose}"
            )
        readiness = self.driver.colour_readiness(colours)
        if not readiness.ready:
            raise PlatformError(
                f"{colours.name(CANARY)} cannot {purpose}: not all its pods are ready: {readiness.reason}"
            )
        return colours.new

    def _preview(self) -> dict[str, Any]:
        found = self.api.get("services", self.preview_service)
        if found is None:
            raise PlatformError(
                f"get services/{self.preview_service} in namespace {self.namespace}: not found "
                "(platform.router.preview_service must name the Service that previews the new colour)"
            )
        if mf.colour_of(found, "selector") is None:
            raise PlatformError(
                f"Service {self.namespace}/{self.preview_service} selects no {mf.COLOUR_LABEL} (blue or "
                "green): give its selector the colour the active Service selects"
            )
        return found

    def _select(self, name: str, service: dict[str, Any], colour: str) -> None:
        """One merge patch of ``name``'s selector to ``colour`` (re-read and redone on 409)."""
        self.api.update("services", name, lambda current: mf.selector_patch(current, colour), current=service)

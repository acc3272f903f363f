"""Blue-green Deployments as a workload driver (``platform.router.kind: service-selector``).

Two colours of ``platform.deployment``, ``<deployment>-blue`` and ``-green``, their selectors and
pods labelled ``opsdag.io/colour``; the active Service selects the colour that serves, the
preview Service the one being judged. Which colour is a release's new one is recorded on the
cluster, never in a process: its Deployment carries ``opsdag.io/replaces: <stable colour>``.
Marked: that colour is the canary track, the other the stable one. None marked: the colour
the active Service selects is stable, and no canary runs.

``start`` makes the new colour from the stable one with the new image, marked. ``promote``
(after the scale-down delay) switches the active Service to it (refused unless all its pods
are ready), drops the mark (it serves on as it runs: no second rollout), points the preview
at it, then deletes the old colour; a retried promote finishes what a first one began.
``remove(CANARY)`` puts both Services on the stable colour, reads them back, then deletes the
new one: no Service is left selecting a colour whose Deployment does not exist. A release
never changes the stable colour's Deployment, so an undo leaves exactly what preflight found.
The old colour is deleted rather than kept at 0 replicas: an aborted next release would
otherwise have to restore that idle copy exactly, and 0 replicas cannot serve a switch back.
"""

from __future__ import annotations

from typing import Any

from opsdag.platforms.base import (
    CANARY,
    STABLE,
    PlatformError,
    Readiness,
    Track,
    WorkloadDriver,
    WorkloadStatus,
)
from opsdag.platforms.kubernetes import manifests as mf
from opsdag.platforms.kubernetes import pods as pf
from opsdag.platforms.kubernetes import readiness as rd
from opsdag.platforms.kubernetes.colours import REPLACES, Colours, annotations_of, read_colours
from opsdag.platforms.kubernetes.driver import UNPULLABLE, KubernetesDriver


class BlueGreenDriver(KubernetesDriver):
    """``<deployment>-blue`` and ``<deployment>-green`` in one namespace; see the module docstring.

    :param active_service: ``platform.router.active_service`` (default: from ``spec``).
    Other parameters: as ``KubernetesDriver``'s; ``deployment`` is the colours' base name.
    """

    # Rolling in place patches ``platform.deployment`` by name, which here is the colours' base
    # name, not a Deployment: a rolling release takes the start/scale path (and a selector
    # cannot split, so it is refused at its first partial weight).
    rolls_in_place = False

    def __init__(self, *, active_service: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if active_service is None and self.spec is not None:
            active_service = self.spec.platform.router.active_service
        if active_service is None:
            raise ValueError("a blue-green driver needs the active Service's name (active_service)")
        self.active_service = active_service

    def colours(self) -> Colours:
        return read_colours(self.api, self.deployment, self.active_service)

    # -- reading -----------------------------------------------------------------------------

    def stable_deployment(self) -> dict[str, Any]:
        found = self.colours().deployment(STABLE)
        assert found is not None  # read_colours refuses a missing stable colour
        return found

    def canary_deployment(self) -> dict[str, Any] | None:
        return self.colours().deployment(CANARY)

    def pods(self, deployment: dict[str, Any], track: Track) -> list[dict[str, Any]]:
        """The pods of a colour's Deployment (its selector holds the colour: no other pod matches)."""
        return self.api.list("pods", deployment.get("spec", {}).get("selector", {}).get("matchLabels") or {})

    def status(self) -> WorkloadStatus:
        colours = self.colours()
        stable, canary = colours.deployment(STABLE), colours.deployment(CANARY)
        assert stable is not None
        canary_failed = self.canary_failure(canary) if canary else None
        capacity, quota = self._capacity(stable, canary)
        return WorkloadStatus(
            stable=self._track_state(stable, rd.deadline_exceeded(stable)),
            canary=self._track_state(canary, canary_failed) if canary else None,
            capacity=capacity,
            details={
                "platform": "kubernetes",
                "namespace": self.namespace,
                "stable_deployment": colours.name(STABLE),
                "canary_deployment": colours.name(CANARY) if canary else None,
                "stable_colour": colours.stable,
                "canary_colour": colours.new if canary else None,
                "active_service": self.active_service,
                "canary_version": (canary["metadata"].get("labels") or {}).get(mf.VERSION_LABEL)
                if canary
                else None,
                "canary_failed": canary_failed,
                "capacity_from": quota,
            },
        )

    def readiness(self) -> Readiness:
        colours = self.colours()
        canary = colours.deployment(CANARY)
        result = self.colour_readiness(colours)
        if result.failed and canary is not None:
            self._traffic_off()  # a failed new colour gets no more traffic, not even the preview's
        return result

    def colour_readiness(self, colours: Colours) -> Readiness:
        """Whether every pod of the new colour is ready (failed: it never will be, with why)."""
        canary = colours.deployment(CANARY)
        if canary is None:
            return Readiness(
                False,
                failed=True,
                reason=f"no new colour of {self.deployment} runs in namespace {self.namespace}",
            )
        unpullable = annotations_of(canary).get(UNPULLABLE)
        if unpullable:
            return Readiness(
                False, failed=True, reason=f"Deployment {self.namespace}/{colours.name(CANARY)}: {unpullable}"
            )
        return rd.rollout_readiness(canary, self.pods(canary, CANARY))

    def metric_selectors(self) -> dict[str, str]:
        """``namespace`` and ``pod`` matchers per colour; the new colour's names its pod-template-hash.

        So the series of an earlier Deployment of that colour, still in a query's rate window,
        never count as this one's. Read once the new colour is ready (the deploy step does):
        before it has pods, the matcher is any pod of that colour.
        """
        colours = self.colours()
        canary = colours.deployment(CANARY)
        pods = rd.current_pods(canary, self.pods(canary, CANARY)) if canary is not None else []
        hashes = {(p["metadata"].get("labels") or {}).get("pod-template-hash") for p in pods}
        canary_hash = hashes.pop() if len(hashes) == 1 and None not in hashes else pf.POD_PART
        part = pf.POD_PART
        return {
            "canary": f'namespace="{self.namespace}", pod=~"{colours.name(CANARY)}-{canary_hash}-{part}"',
            "stable": f'namespace="{self.namespace}", pod=~"{colours.name(STABLE)}-{part}-{part}"',
        }

    # -- changing ----------------------------------------------------------------------------

    def start(self, image: str, instances: int) -> None:
        if instances < 1:
            raise PlatformError(f"a new colour needs at least 1 instance, {instances} asked")
        colours = self.colours()
        stable = colours.deployment(STABLE)
        assert stable is not None
        wanted = mf.colour_deployment(
            stable,
            base=self.deployment,
            colour=colours.new,
            image=image,
            replicas=instances,
            container=self.container,
        )
        wanted["metadata"]["annotations"][REPLACES] = colours.stable
        resolution = self.resolve_image(image)
        unpullable = None if resolution.pullable else resolution.reason
        current = colours.deployments[colours.new]
        name = colours.name(CANARY)
        if current is None:
            if unpullable:
                wanted["metadata"]["annotations"][UNPULLABLE] = unpullable
            self.api.create("deployments", wanted)
            return
        if not colours.marked or mf.image_of(current, self.container) != image:
            self._traffic_off()  # whatever reached this colour goes back to the stable one first
            patch = {
                "metadata": {
                    "labels": wanted["metadata"]["labels"],
                    "annotations": {**wanted["metadata"]["annotations"], UNPULLABLE: unpullable},
                },
                "spec": {"replicas": instances, "template": wanted["spec"]["template"]},
            }
            self.api.merge_patch("deployments", name, patch)
        elif int(current["spec"].get("replicas", 1)) != instances:
            self.api.merge_patch("deployments", name, {"spec": {"replicas": instances}})

    track_kind = "colour"

    def track_deployment(self, track: Track) -> tuple[str, dict[str, Any] | None]:
        colours = self.colours()
        return colours.name(track), colours.deployment(track)

    def remove(self, track: Track = CANARY) -> None:
        if track == STABLE:
            raise PlatformError(
                f"the stable colour of {self.deployment} serves: promote() or a switch replaces it"
            )
        colours = self.colours()
        if not colours.marked:
            return  # no release's colour runs
        self._traffic_off()
        self.api.delete("deployments", colours.name(CANARY))

    # A switch promotes: no rollout to wait for, so the one-go steps of the interface, not the
    # Kubernetes driver's (which roll the stable Deployment and wait in the triggerer).
    promote_start = WorkloadDriver.promote_start
    promote_readiness = WorkloadDriver.promote_readiness
    promote_finish = WorkloadDriver.promote_finish
    promote_revert = WorkloadDriver.promote_revert
    # Its waits read colours, not the plain Deployments the Kubernetes driver's async twins read:
    # the interface's twins, its own sync reads in a thread.
    readiness_async = WorkloadDriver.readiness_async
    roll_readiness_async = WorkloadDriver.roll_readiness_async
    promote_readiness_async = WorkloadDriver.promote_readiness_async

    def promote(self) -> None:
        colours = self.colours()
        if colours.marked:
            ready = self.colour_readiness(colours)
            if not ready.ready:
                raise PlatformError(f"cannot promote a new colour that is not ready: {ready.reason}")
            router = self._router()
            router.switch(CANARY)  # refused unless every pod of the new colour is ready
            split = router.verify_weight()
            if split.canary != 100:
                raise PlatformError(
                    f"switched, but the active Service sends {split.canary:g} % to the new colour"
                )
            # From here the new colour is the stable one, as it runs.
            self.api.merge_patch(
                "deployments", colours.name(CANARY), {"metadata": {"annotations": {REPLACES: None}}}
            )
            colours = self.colours()
        old = colours.deployments[colours.new]
        if old is None:
            return  # promoted already
        self._traffic_off()  # the preview Service too on the stable colour before the old one goes
        self.api.delete("deployments", colours.name(CANARY))

    def _router(self) -> Any:
        if self.router is None:
            raise PlatformError("a blue-green driver moves traffic through its router: build it from a spec")
        return self.router

    def _traffic_off(self) -> None:
        """Both Services on the stable colour, read back (a Service left on the new colour: raises)."""
        router = self._router()
        router.switch(STABLE)
        router.set_preview(False)
        split = router.verify_weight()
        if split.canary or split.preview:
            raise PlatformError(
                f"the Services of {self.deployment} still send traffic to the new colour ({split}): "
                "it is kept running"
            )

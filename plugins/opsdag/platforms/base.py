"""The two interfaces a release talks to: a workload driver and a traffic router.

After Argo Rollouts' split between the rollout controller and its
``TrafficRoutingReconciler``: the *driver* starts and removes a version's instances
(sandbox processes, Kubernetes Deployments); the *router* decides which share of the
traffic reaches them (HAProxy weights, an HTTPRoute's backend weights, NGINX canary
annotations, replica ratio). A release DAG never branches on either's kind: it branches
on the strategy, and reaches both through :mod:`opsdag.platforms.registry`.

Tracks: ``stable`` is the version serving before the release; ``canary`` is the new
version, whatever the strategy calls it (the canary, blue-green's new colour, rolling's
replaced instances). Every method is idempotent: calling it twice leaves the same state
as calling it once. Every method is safe to run in a thread (``asyncio.to_thread``) next
to other calls on the same service, from any process: drivers and routers serialise
their own changes (the sandbox through its state lock). Triggers call
``TrafficRouter.set_weight``, ``switch``, ``set_preview`` and ``verify_weight`` that way;
they await the waits' async twins (``readiness_async``, ``roll_readiness_async``,
``promote_readiness_async``, ``weight_settled_async``): the sync method in a thread, unless a
driver or router reads without one.
"""

from __future__ import annotations

import abc
import asyncio
import time
from typing import Any, ClassVar, Self

from opsdag.platforms.states import (
    CANARY,
    STABLE,
    TRACKS,
    ImageResolution,
    PlatformError,
    Readiness,
    RollbackTarget,
    Track,
    TrackState,
    TrafficSplit,
    WorkloadStatus,
)

__all__ = [
    "CANARY",
    "STABLE",
    "TRACKS",
    "ImageResolution",
    "PlatformError",
    "Readiness",
    "RollbackTarget",
    "Track",
    "TrackState",
    "TrafficRouter",
    "TrafficSplit",
    "WorkloadDriver",
    "WorkloadStatus",
]


class WorkloadDriver(abc.ABC):
    """Starts, scales and removes a service's versions. Chosen by ``platform.kind``."""

    kind: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def from_spec(cls, spec: Any) -> Self:
        """The driver of a ``ServiceSpec`` (connections are resolved on use, never here)."""

    @abc.abstractmethod
    def status(self) -> WorkloadStatus:
        """What runs on each track now, read from the platform (never from a cache)."""

    @abc.abstractmethod
    def resolve_image(self, image: str) -> ImageResolution:
        """Whether ``image`` can run here (declared tag, pullable), without starting anything."""

    def push_repository(self, repository: str) -> str:
        """Where a build pushes the images this platform pulls as ``repository``.

        A platform pulls from the repository's own registry, so a build pushes there; one
        that reaches that registry under another address (the sandbox) says which.
        """
        return repository

    @abc.abstractmethod
    def start(self, image: str, instances: int) -> None:
        """Run ``instances`` of ``image`` on the canary track; a new canary takes no traffic.

        A canary already running ``image`` is kept and scaled to ``instances`` (instances
        added while it takes traffic join once they answer); one running another image is
        replaced (its traffic goes to stable first). An image that cannot run starts a
        canary that ``readiness()`` reports failed, with the reason.
        """

    @abc.abstractmethod
    def readiness(self) -> Readiness:
        """Whether every canary instance is ready; failed for good with the reason (crash, pull).

        A canary found failed gets no more traffic (the driver takes it out of rotation).
        """

    async def readiness_async(self) -> Readiness:
        """``readiness()`` for a trigger's event loop (here: in a thread; a driver may read async)."""
        return await asyncio.to_thread(self.readiness)

    @abc.abstractmethod
    def scale(self, track: Track, instances: int) -> None:
        """Set a track's instance count (rolling batches, their undo). Stable never goes below 1.

        New instances join the traffic once they answer; removed ones leave it before they stop.
        """

    @abc.abstractmethod
    def remove(self, track: Track = CANARY) -> None:
        """Stop a track's instances, after taking them out of traffic. Nothing running: nothing to do.

        A driver may refuse to remove the only version that serves (the sandbox refuses
        ``stable``: ``promote()`` replaces it).
        """

    @abc.abstractmethod
    def promote(self) -> None:
        """The canary becomes the stable version with all traffic; the old stable's instances stop.

        Already promoted (no canary, stable is the last promoted image): nothing to do. Blocks
        until done (runbooks call it); a release's promote step uses the steps below, deferred.
        """

    # -- promotion in steps ----------------------------------------------------------------------
    # A platform that rolls its stable instances to the new version (Kubernetes patches the stable
    # Deployment) would hold a worker slot for the whole rollout: it splits ``promote`` so the
    # wait runs in the triggerer. The defaults promote in one go (a driver beneath one with steps
    # that promotes in one call takes these back by name: the blue-green driver).

    def promote_start(self) -> str | None:
        """Make the promotion's change; None: promotion is complete, else one line on what now rolls.

        Called again on a promotion under way, it changes nothing more and says the same.
        """
        self.promote()
        return None

    def promote_readiness(self) -> Readiness:
        """Whether the rollout ``promote_start`` began is done, or failed for good with why.

        The platform's promote timeout counts from the start ``promote_start`` recorded on the
        platform, so a retried task or a restarted triggerer keeps the first deadline. Safe in a
        thread (the trigger calls it so).
        """
        return Readiness(True, reason="promoted in one step")

    async def promote_readiness_async(self) -> Readiness:
        """``promote_readiness()`` for a trigger's event loop (as ``readiness_async``)."""
        return await asyncio.to_thread(self.promote_readiness)

    def promote_finish(self) -> None:
        """After a done rollout: route back to stable, remove the canary (or its record). Idempotent."""
        return None

    def promote_revert(self, reason: str) -> None:
        """After a failed rollout: put back what served, then raise ``PlatformError`` saying so and why."""
        raise PlatformError(f"promotion failed: {reason}")

    def promote_by_steps(self, poll_interval: float = 1.0) -> None:
        """``promote()`` of a driver with steps: start, wait in this thread, then finish or revert."""
        if self.promote_start() is None:
            return
        while True:
            readiness = self.promote_readiness()
            if readiness.ready:
                self.promote_finish()
                return
            if readiness.failed:
                self.promote_revert(readiness.reason)
                raise PlatformError(f"promotion failed: {readiness.reason}")  # a revert that did not raise
            time.sleep(poll_interval)

    def restart(self, track: Track = STABLE) -> list[str]:
        """Restart the instances of ``track`` that do not run or do not answer its health check.

        Returns what was restarted, one line each (``"app-1 (pid 12) -> app-3"``); every
        instance answering: an empty list, nothing done. The restarted instances are back
        in the traffic once they answer; ``status()`` says when they are ready. Platforms
        that cannot restart instances yet raise ``PlatformError`` naming themselves.
        """
        raise PlatformError(
            f"the {self.kind!r} platform cannot restart instances (WorkloadDriver.restart is not "
            "implemented for it): restart them by hand, or remove restart_instances from the runbook"
        )

    def logs(self, track: Track = STABLE, lines: int = 20) -> dict[str, str]:
        """The last ``lines`` lines of each instance's log on ``track`` (instance name: text).

        For diagnostics. Platforms that cannot read their instances' logs yet raise
        ``PlatformError`` naming themselves.
        """
        raise PlatformError(
            f"the {self.kind!r} platform cannot read instance logs "
            "(WorkloadDriver.logs is not implemented for it)"
        )

    @abc.abstractmethod
    def rollback_target(self) -> RollbackTarget:
        """What serves now, recorded before a release changes anything."""

    @abc.abstractmethod
    def metric_selectors(self) -> dict[str, str]:
        """PromQL label matchers for ``$canary`` and ``$stable`` in analysis queries."""

    @abc.abstractmethod
    def endpoints(self, track: Track) -> list[str]:
        """Base URLs of a track's instances, for smoke checks (``http://127.0.0.1:8123``)."""

    # -- rolling in place ------------------------------------------------------------------------
    #: whether a rolling release replaces the serving instances in place (``roll``, ``undo_roll``:
    #: the platform's own rolling update, e.g. a Kubernetes Deployment's) rather than growing a
    #: canary track beside them (``start``, ``scale``). Then the new version's share of the
    #: traffic is the ratio of its ready instances: no router can change it.
    rolls_in_place: ClassVar[bool] = False

    def roll(self, image: str, updated: int, total: int) -> None:
        """Replace serving instances by ``image`` until ``updated`` of ``total`` run it, then hold there.

        Returns once the platform holds at the batch (the new instances may still be starting:
        ``roll_readiness`` says when they are ready). Already there: nothing to do. ``total``
        must be the instance count the platform runs (the batches were planned for it).
        """
        raise PlatformError(f"the {self.kind!r} platform does not roll in place (rolls_in_place is False)")

    def roll_readiness(self, image: str, updated: int, since: float) -> Readiness:
        """Whether the ``updated`` new instances of a ``roll`` are ready; failed for good with why
        (crash, pull, no progress for the platform's deadline counted from ``since``, epoch seconds)."""
        raise PlatformError(f"the {self.kind!r} platform does not roll in place (rolls_in_place is False)")

    async def roll_readiness_async(self, image: str, updated: int, since: float) -> Readiness:
        """``roll_readiness()`` for a trigger's event loop (as ``readiness_async``)."""
        return await asyncio.to_thread(self.roll_readiness, image, updated, since)

    def undo_roll(self, target: RollbackTarget) -> None:
        """Put back exactly what served before the release (``target``, recorded by preflight) and
        wait until it serves again. Nothing was rolled: nothing to do."""
        raise PlatformError(f"the {self.kind!r} platform does not roll in place (rolls_in_place is False)")

    def abort_roll(self) -> str | None:
        """Start putting back what served before a rolling release in place, without waiting.

        For a failed gate's trigger: no router can take traffic off instances rolled in place,
        so the fastest way off the new version is to start the undo at once; ``undo_roll``
        (the rollback task) then checks it against the target and waits. Returns one line on
        what was started; None when no rolling release is under way.
        """
        return None


class TrafficRouter(abc.ABC):
    """Splits a service's traffic between stable and canary. Chosen by ``platform.router.kind``."""

    kind: ClassVar[str]
    #: whether ``set_weight`` sends a weighted share of the traffic at all (canary needs it)
    can_split: ClassVar[bool] = True
    #: whether that share is the percent asked; False (a replica ratio) when it is the nearest
    #: one whole instances give: ``verify_weight`` says the real share, ``exact=False``
    exact_split: ClassVar[bool] = True
    #: whether the router has a preview route to the canary (blue-green's pre-promotion analysis)
    can_preview: ClassVar[bool] = False
    #: whether a weight change is in force only later than made (a replica ratio: once the new canary
    #: pods take traffic): a stage then makes it (``start_weight``) and waits for ``weight_settled``
    #: deferred, up to ``settle_timeout`` seconds, not in a worker slot as ``set_weight`` does
    settles_later: ClassVar[bool] = False
    settle_timeout: float = 0.0

    @classmethod
    @abc.abstractmethod
    def from_spec(cls, spec: Any) -> Self: ...

    @abc.abstractmethod
    def set_weight(self, percent: int) -> None:
        """Send ``percent`` (0..100) of the traffic to the canary, the rest to stable.

        Above 0 needs a canary that is not failed; 0 always works (the abort).
        """

    def start_weight(self, percent: int) -> None:
        """``set_weight``'s change, without waiting for it to be in force (default: ``set_weight``).

        Idempotent: a second call finds the change made and makes no other."""
        self.set_weight(percent)

    def weight_settled(self) -> Readiness:
        """Whether the split the last weight change set is in force; failed for good (the canary
        crashed, cannot be pulled) with why. Default: in force at once (``settles_later`` False)."""
        return Readiness(True, reason="in force as soon as it is set")

    async def weight_settled_async(self) -> Readiness:
        """``weight_settled()`` for a trigger's event loop (here: in a thread; a router may read async)."""
        return await asyncio.to_thread(self.weight_settled)

    @abc.abstractmethod
    def verify_weight(self) -> TrafficSplit:
        """The split really in force now, read back from the router."""

    def switch(self, track: Track) -> None:
        """All traffic to ``track`` in one call (blue-green's switch and switch-back)."""
        self.set_weight(100 if track == CANARY else 0)

    def set_preview(self, enabled: bool, share: float | None = None) -> None:
        """Route (or stop routing) the preview entry point to the canary.

        ``share``: where the platform makes synthetic load (the sandbox), the share of it
        sent to the preview route (0 < share <= 0.5; None: the spec's
        ``bluegreen.preview_share``); routers without synthetic load ignore it.
        """
        raise NotImplementedError(f"router {self.kind!r} has no preview route")

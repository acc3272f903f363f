"""What drivers and routers report and take: tracks, readiness, a workload's status, a split.

Plain frozen dataclasses, no platform code: the engine's pure decisions (the gates, the
rollback checks, the reports) read them without importing a driver. :mod:`opsdag.platforms.base`
re-exports them with the interfaces that return them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Track = Literal["stable", "canary"]
STABLE: Track = "stable"
CANARY: Track = "canary"
TRACKS: tuple[Track, Track] = (STABLE, CANARY)


class PlatformError(RuntimeError):
    """A driver or router refused, or could not do, what was asked; the message says why and what to do.

    Drivers raise their own subclasses (the sandbox's ``SandboxError``); callers catch this one.
    """


@dataclass(frozen=True)
class Readiness:
    """Whether the new version can take traffic; ``failed``: it never will (bad image, crash), with why."""

    ready: bool
    failed: bool = False
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ImageResolution:
    """An image reference as the platform can run it: ``pullable`` false says why not in ``reason``.

    ``digest`` is the content digest (``sha256:...``) when the platform knows it.
    """

    reference: str
    pullable: bool
    reason: str = ""
    digest: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrackState:
    """One version on one track: its image, how many instances it has and how many are ready.

    ``failed``: why this version will never be ready (a canary that cannot be pulled or
    crashes), else None.
    """

    image: str
    instances: int
    ready_instances: int
    failed: str | None = None

    @property
    def healthy(self) -> bool:
        return self.failed is None and 0 < self.instances == self.ready_instances

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WorkloadStatus:
    """What runs now, per track (a track that runs nothing is None).

    ``capacity``: instances the platform can run for this service at most, both tracks
    together; ``track_capacity``: at most on one track, if the platform has such a limit
    (a canary of more cannot start).
    ``details``: platform-specific facts for people (versions, ports, URLs), never decided on.
    """

    stable: TrackState | None
    canary: TrackState | None
    capacity: int
    details: dict[str, Any] = field(default_factory=dict)
    track_capacity: int | None = None

    @property
    def stable_healthy(self) -> bool:
        return self.stable is not None and self.stable.healthy

    def room_for(self, instances: int) -> str | None:
        """Why ``instances`` new instances cannot start beside the stable ones (None: they can)."""
        stable = self.stable.instances if self.stable else 0
        if self.track_capacity is not None and instances > self.track_capacity:
            return f"{instances} instance(s) asked; one version runs at most {self.track_capacity} here"
        if stable + instances > self.capacity:
            return (
                f"{instances} new instance(s) beside {stable} stable one(s) exceed the capacity of "
                f"{self.capacity} instance(s)"
            )
        return None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stable_healthy": self.stable_healthy}


@dataclass(frozen=True)
class TrafficSplit:
    """The split actually in force at the router, in percent of requests per track.

    ``requested``: the canary percent last asked for (None if the router does not know).
    ``exact`` is false when what is in force is not what was asked: a replica ratio of 3
    instances cannot give 10 %, a canary whose instances are down gets nothing; then
    ``canary`` is what really happens. ``preview``: the preview route reaches the canary
    (blue-green). Both 0: no instance takes traffic.
    """

    stable: float
    canary: float
    exact: bool = True
    preview: bool = False
    requested: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RollbackTarget:
    """Exactly what to restore if the release is undone: the serving image, its instances, the split."""

    image: str
    instances: int
    canary_weight: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

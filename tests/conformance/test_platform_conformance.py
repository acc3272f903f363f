"""What every workload driver + traffic router pair must do, through the interfaces only.

A release promoted and a second one aborted, with the status and the split in force read
back after every step; every mutating call made twice (a retried task) leaves the same
state as once; both tracks scaled; blue-green's switch and switch back; the preview
route; versions that cannot run. Runs on real platforms (``conftest.PLATFORMS``), no mocks.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable

import pytest
from platforms_under_test import PlatformUnderTest
from support.waiting import wait_for

from opsdag.platforms.base import (
    CANARY,
    STABLE,
    ImageResolution,
    PlatformError,
    Readiness,
    RollbackTarget,
    TrafficRouter,
    TrafficSplit,
    WorkloadDriver,
    WorkloadStatus,
)
from opsdag.platforms.weights import replica_share

pytestmark = pytest.mark.timeout(300)


def twice(call: Callable[[], object]) -> None:
    """A retried task: the same call again must change nothing more."""
    call()
    call()


def shape(status: WorkloadStatus) -> tuple:
    """What a retry must leave the same: each track's image, instance count and failure."""
    return tuple(
        (track.image, track.instances, track.failed) if track else None
        for track in (status.stable, status.canary)
    )


def twice_same(platform: PlatformUnderTest, call: Callable[[], object]) -> None:
    """``call`` twice; status and split after the second are those after the first."""
    call()
    first = (shape(platform.driver.status()), platform.router.verify_weight())
    call()
    assert (shape(platform.driver.status()), platform.router.verify_weight()) == first


def expect(
    platform: PlatformUnderTest,
    *,
    stable: tuple[str, int],
    canary: tuple[str, int] | None = None,
    weight: int = 0,
    preview: bool = False,
) -> WorkloadStatus:
    """The status and the split in force are exactly these (stable healthy; canary ready if given).

    A router whose split is not exact (a replica ratio) sets the canary's instance count
    itself: its split must instead be the ready instances' ratio, with ``weight`` as asked.
    """
    status = platform.driver.status()
    assert status.stable is not None and (status.stable.image, status.stable.instances) == stable
    assert status.stable_healthy, status
    exact = platform.router.exact_split
    if canary is None:
        assert status.canary is None, status
    else:
        assert status.canary is not None and status.canary.image == canary[0], status
        assert status.canary.failed is None and status.canary.ready_instances == status.canary.instances
        assert status.canary.instances == canary[1] or not exact, status
    split = platform.router.verify_weight()
    if exact:
        assert split.canary == pytest.approx(weight, abs=1), split
        assert split.stable == pytest.approx(100 - weight, abs=1), split
        assert split.exact or not platform.router.can_split, split
    else:
        assert split == ratio_split(status, weight), split
    assert split.preview is preview, split
    return status


def ratio_split(status: WorkloadStatus, weight: int) -> TrafficSplit:
    """What a replica ratio must say: the canary's ready instances over all, and the weight asked
    (None for a canary nobody asked a weight for yet)."""
    canary = status.canary.ready_instances if status.canary else 0
    total = canary + status.stable.ready_instances
    share = round(100 * canary / total, 1)
    asked = weight if weight or status.canary is None or status.canary.instances == 0 else None
    return TrafficSplit(
        stable=round(100 - share, 1),
        canary=share,
        exact=abs(share - weight) < 0.5 and asked is not None,
        requested=asked,
    )


def ready(platform: PlatformUnderTest) -> Readiness:
    return wait_for(
        lambda: (r := platform.driver.readiness()).ready and r,
        platform.ready_timeout,
        what="the new version ready",
    )


def weight_for(platform: PlatformUnderTest, percent: int) -> int:
    """``percent``, or 100 on a router that cannot split (a Service selector: all or nothing)."""
    return percent if platform.router.can_split else 100


def test_the_pair_comes_from_the_registry(platform: PlatformUnderTest) -> None:
    assert isinstance(platform.driver, WorkloadDriver) and isinstance(platform.router, TrafficRouter)
    assert platform.driver.kind and platform.router.kind


def test_status_before_any_release(platform: PlatformUnderTest) -> None:
    n = platform.instances
    status = expect(platform, stable=(platform.stable_image, n))
    assert status.capacity >= 2 * n
    assert status.room_for(n) is None
    assert platform.driver.rollback_target() == RollbackTarget(platform.stable_image, n, 0)
    assert set(platform.driver.metric_selectors()) == {"canary", "stable"}
    assert len(platform.driver.endpoints(STABLE)) == n
    assert platform.driver.endpoints(CANARY) == []
    assert platform.driver.readiness().failed  # nothing to be ready


def test_image_resolution(platform: PlatformUnderTest) -> None:
    good = platform.driver.resolve_image(platform.new_image)
    assert good == ImageResolution(platform.new_image, pullable=True, reason="", digest=good.digest)
    bad = platform.driver.resolve_image(platform.unpullable_image)
    assert not bad.pullable and bad.reference == platform.unpullable_image
    assert platform.unpullable_image.rpartition(":")[2] in bad.reason
    expect(platform, stable=(platform.stable_image, platform.instances))  # nothing started


def test_a_release_promoted_then_a_second_one_aborted(platform: PlatformUnderTest) -> None:
    driver, router, n = platform.driver, platform.router, platform.instances
    old, new, other = platform.stable_image, platform.new_image, platform.other_image

    if router.exact_split:
        twice_same(platform, lambda: driver.start(new, n))
    else:  # a replica ratio's canary takes its instances' share as they start: the split grows
        twice(lambda: driver.start(new, n))
    status = driver.status()
    assert status.canary is not None and (status.canary.image, status.canary.instances) == (new, n)
    if router.exact_split:
        assert router.verify_weight().canary == 0  # a new version takes no traffic
    ready(platform)
    expect(platform, stable=(old, n), canary=(new, n))
    assert len(driver.endpoints(CANARY)) == n
    for weight in (weight_for(platform, 10), weight_for(platform, 50)):
        twice_same(platform, lambda w=weight: router.set_weight(w))
        expect(platform, stable=(old, n), canary=(new, n), weight=weight)
    twice_same(platform, driver.promote)
    expect(platform, stable=(new, n))

    # A second release, aborted: weight 0 first, then its instances go.
    target = driver.rollback_target()
    assert target == RollbackTarget(new, n, 0)
    twice(lambda: driver.start(other, n))
    ready(platform)
    router.set_weight(weight_for(platform, 50))
    expect(platform, stable=(new, n), canary=(other, n), weight=weight_for(platform, 50))
    twice_same(platform, lambda: router.set_weight(0))
    expect(platform, stable=(new, n), canary=(other, n), weight=0)
    twice_same(platform, lambda: driver.remove(CANARY))
    expect(platform, stable=(new, n))
    assert driver.rollback_target() == target
    assert driver.endpoints(CANARY) == []


def test_scale_both_tracks(platform: PlatformUnderTest) -> None:
    driver, router, n = platform.driver, platform.router, platform.instances
    old, new = platform.stable_image, platform.new_image
    driver.start(new, 1)
    ready(platform)
    twice_same(platform, lambda: driver.scale(CANARY, 3))
    ready(platform)
    expect(platform, stable=(old, n), canary=(new, 3))
    share = weight_for(platform, replica_share(3, n))
    router.set_weight(share)
    twice_same(platform, lambda: driver.scale(STABLE, 1))
    expect(platform, stable=(old, 1), canary=(new, 3), weight=share)  # the split stays what was asked
    with pytest.raises(PlatformError):
        driver.scale(STABLE, 0)  # stable never goes below 1
    twice_same(platform, lambda: driver.scale(STABLE, n))
    expect(platform, stable=(old, n), canary=(new, 3), weight=share)
    twice_same(platform, lambda: driver.scale(CANARY, 1))
    expect(platform, stable=(old, n), canary=(new, 1), weight=share)
    router.set_weight(0)
    driver.remove(CANARY)
    expect(platform, stable=(old, n))


def test_switch_and_switch_back(platform: PlatformUnderTest) -> None:
    driver, router, n = platform.driver, platform.router, platform.instances
    old, new = platform.stable_image, platform.new_image
    driver.start(new, n)
    ready(platform)
    took = []

    def switch(track: str) -> None:
        started = time.perf_counter()
        router.switch(track)
        took.append(time.perf_counter() - started)

    twice_same(platform, lambda: switch(CANARY))
    expect(platform, stable=(old, n), canary=(new, n), weight=100)  # the old colour stays up
    twice_same(platform, lambda: switch(STABLE))
    expect(platform, stable=(old, n), canary=(new, n), weight=0)
    # One router call: well inside the 1 s that taking traffic off a failing version may take.
    # (A replica ratio's switch starts instances and waits for them: not one router call.)
    assert max(took) < 1.0 or not router.exact_split, took
    print(f"\n{platform.name}: switch took {statistics.median(took) * 1000:.1f} ms (median of {len(took)})")
    driver.remove(CANARY)
    expect(platform, stable=(old, n))


def test_preview_on_and_off(platform: PlatformUnderTest) -> None:
    driver, router, n = platform.driver, platform.router, platform.instances
    if not router.can_preview:
        with pytest.raises(NotImplementedError):
            router.set_preview(True)
        return
    old, new = platform.stable_image, platform.new_image
    driver.start(new, n)
    ready(platform)
    twice_same(platform, lambda: router.set_preview(True))
    expect(platform, stable=(old, n), canary=(new, n), weight=0, preview=True)  # main route untouched
    twice_same(platform, lambda: router.set_preview(False))
    expect(platform, stable=(old, n), canary=(new, n), weight=0, preview=False)
    router.set_preview(True)
    driver.remove(CANARY)  # the preview route does not outlive the version it showed
    expect(platform, stable=(old, n), preview=False)


def test_a_version_that_cannot_be_pulled(platform: PlatformUnderTest) -> None:
    driver, router, n = platform.driver, platform.router, platform.instances
    twice(lambda: driver.start(platform.unpullable_image, n))
    readiness = driver.readiness()
    assert readiness.failed and not readiness.ready and readiness.reason
    assert driver.status().canary.failed
    with pytest.raises(PlatformError):
        router.set_weight(10)
    assert router.verify_weight().canary == 0
    twice(lambda: driver.remove(CANARY))
    expect(platform, stable=(platform.stable_image, n))


def test_a_version_that_crashes_at_start(platform: PlatformUnderTest) -> None:
    if platform.crashing_image is None:
        pytest.skip(f"{platform.name} has no crashing version to release")
    driver, n = platform.driver, platform.instances
    driver.start(platform.crashing_image, n)
    readiness = wait_for(
        lambda: (r := driver.readiness()).failed and r, platform.ready_timeout, what="the crash reported"
    )
    assert not readiness.ready and readiness.reason
    with pytest.raises(PlatformError):
        driver.promote()
    assert driver.status().stable_healthy
    driver.remove(CANARY)
    expect(platform, stable=(platform.stable_image, n))


def test_no_traffic_to_a_version_that_does_not_run(platform: PlatformUnderTest) -> None:
    with pytest.raises(PlatformError):
        platform.router.set_weight(10)
    twice(lambda: platform.router.set_weight(0))  # the abort always works
    twice(lambda: platform.driver.remove(CANARY))  # nothing to remove: nothing to do
    expect(platform, stable=(platform.stable_image, platform.instances))


def test_trigger_calls_from_threads(platform: PlatformUnderTest) -> None:
    """Triggers call the router and readiness through asyncio.to_thread, side by side."""
    driver, router, n = platform.driver, platform.router, platform.instances
    driver.start(platform.new_image, n)
    ready(platform)

    async def together() -> list[object]:
        calls = [asyncio.to_thread(router.set_weight, weight_for(platform, w)) for w in (10, 20, 30, 40)]
        calls += [asyncio.to_thread(driver.readiness), asyncio.to_thread(router.verify_weight)]
        return await asyncio.gather(*calls)

    results = asyncio.run(together())
    assert results[4].ready
    asyncio.run(asyncio.to_thread(router.set_weight, 0))
    expect(platform, stable=(platform.stable_image, n), canary=(platform.new_image, n), weight=0)
    driver.remove(CANARY)

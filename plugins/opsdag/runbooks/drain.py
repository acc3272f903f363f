"""Draining a canary, without Airflow: what there is to drain, and whether it is drained.

``drain_canary`` takes a canary out of traffic (``router.set_weight(0)``) and stops it
(``driver.remove(CANARY)``), then reads both back. The decisions here are pure: what the
step would do given what the platform runs and the split the router reports, and what
is still wrong after the drain (empty: drained).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from opsdag.platforms.base import CANARY, TrafficRouter, TrafficSplit, WorkloadDriver, WorkloadStatus


@dataclass(frozen=True)
class DrainPlan:
    """What a drain has to do: take the canary's traffic to 0, stop its instances (either may be moot)."""

    zero_weight: bool
    remove: bool
    canary_image: str | None
    canary_weight: float

    @property
    def needed(self) -> bool:
        return self.zero_weight or self.remove

    def describe(self) -> str:
        if not self.needed:
            return "no canary runs and it takes no traffic: nothing to drain"
        parts = []
        if self.zero_weight:
            parts.append(f"take the canary's {self.canary_weight:g} % of the traffic to 0")
        if self.remove:
            parts.append(f"remove the canary {self.canary_image}")
        return " and ".join(parts)


def drain_plan(status: WorkloadStatus, split: TrafficSplit) -> DrainPlan:
    """What draining the canary means now (a weight left above 0 without a canary is still zeroed)."""
    canary = status.canary
    return DrainPlan(
        zero_weight=split.canary > 0 or (split.requested or 0) > 0,
        remove=canary is not None,
        canary_image=canary.image if canary else None,
        canary_weight=split.canary,
    )


def drained_problems(status: WorkloadStatus, split: TrafficSplit) -> list[str]:
    """Why the canary is not drained yet, read back from the platform (empty: drained)."""
    problems = []
    if split.canary > 0:
        problems.append(f"the router still sends {split.canary:g} % to the canary")
    if status.canary is not None:
        problems.append(
            f"the canary {status.canary.image} still runs ({status.canary.instances} instance(s))"
        )
    if not status.stable_healthy:
        ready = f"{status.stable.ready_instances} of {status.stable.instances}" if status.stable else "none"
        problems.append(f"the stable track is not healthy ({ready} instance(s) ready)")
    return problems


class DrainFailed(RuntimeError):
    """The canary was not drained within the step's time; the message says what is still wrong."""


@dataclass(frozen=True)
class Drained:
    """What a drain did: the plan it carried out, how long until read back drained, the state after."""

    plan: DrainPlan
    duration_s: float
    status: WorkloadStatus
    split: TrafficSplit


def drain(driver: WorkloadDriver, router: TrafficRouter, *, timeout_s: float, poll_s: float = 0.5) -> Drained:
    """Take the canary out of traffic, then stop it, through the service's router and driver.

    ``router.set_weight(0)`` first, read back until the router sends the canary nothing,
    then ``driver.remove(CANARY)``, read back until no canary runs and the stable track is
    healthy. Not drained within ``timeout_s``: ``DrainFailed`` naming what is left.
    """
    plan = drain_plan(driver.status(), router.verify_weight())
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    if plan.zero_weight:
        router.set_weight(0)
        while (split := router.verify_weight()).canary > 0:
            if time.monotonic() > deadline:
                raise DrainFailed(
                    f"after {timeout_s:g} s the router still sends {split.canary:g} % to the canary"
                )
            time.sleep(poll_s)
    if plan.remove:
        driver.remove(CANARY)
    while problems := drained_problems(status := driver.status(), split := router.verify_weight()):
        if time.monotonic() > deadline:
            raise DrainFailed(f"not drained after {timeout_s:g} s: {'; '.join(problems)}")
        time.sleep(poll_s)
    return Drained(plan=plan, duration_s=round(time.monotonic() - t0, 2), status=status, split=split)

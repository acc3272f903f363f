"""How each strategy is undone, on the driver + router interface: traffic first, instances after.

Safety first, cleanup second (Argo Rollouts' abort): the router takes traffic off the
new version before any instance changes. The gate's trigger has usually done the first
step already; every call is idempotent, so doing it again costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from opsdag.platforms.base import CANARY, STABLE, RollbackTarget, TrafficRouter, WorkloadDriver


def undo_canary(driver: WorkloadDriver, router: TrafficRouter, target: RollbackTarget) -> None:
    router.set_weight(0)
    driver.remove(CANARY)


def undo_bluegreen(driver: WorkloadDriver, router: TrafficRouter, target: RollbackTarget) -> None:
    router.switch(STABLE)  # one call: the old colour is still up until the scale-down delay ends
    router.set_preview(False)
    driver.remove(CANARY)


def undo_rolling(driver: WorkloadDriver, router: TrafficRouter, target: RollbackTarget) -> None:
    if driver.rolls_in_place:
        # The previous version's template back on every instance (``kubectl rollout undo``):
        # the router never held a share of a rolling release in place, there is none to take.
        driver.undo_roll(target)
        return
    router.set_weight(0)
    driver.scale(STABLE, target.instances)  # the previous version back on every replaced instance
    driver.remove(CANARY)


UNDO: dict[str, Callable[[WorkloadDriver, TrafficRouter, RollbackTarget], None]] = {
    "canary": undo_canary,
    "bluegreen": undo_bluegreen,
    "rolling": undo_rolling,
}

"""Take traffic off a failing new version from inside a trigger, before its event goes out.

Why in the trigger: the task that rolls back runs only once the scheduler has resumed
the deferred task and scheduled the next one, seconds later, while the router call
takes milliseconds. So a trigger that decides "failing" calls the router itself (weight
0, switch back, preview off), reads back the split really in force, and only then
yields its event, which carries what it did. The rollback task repeats the same action
(every router call is idempotent) and removes the instances.

The router's calls block (sockets, a file lock): they run in a thread
(``asyncio.to_thread``) so the triggerer's event loop keeps serving other triggers. A
failing call never stops the event: it is recorded as ``error`` and the rollback task
tries again. The kwargs hold the service spec's JSON (connection ids, no secrets).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opsdag.platforms.base import TrafficRouter, TrafficSplit

# What each action does to the router, and how the split read back proves it was done.
_ACTIONS: dict[str, tuple[str, Callable[[TrafficRouter], None], Callable[[TrafficSplit], bool]]] = {
    "weight_zero": ("set_weight(0)", lambda r: r.set_weight(0), lambda s: s.canary == 0),
    "switch_back": ('switch("stable")', lambda r: r.switch("stable"), lambda s: s.canary == 0),
    "preview_off": ("set_preview(False)", lambda r: r.set_preview(False), lambda s: not s.preview),
}
ABORT_ACTIONS = tuple(_ACTIONS)


def abort_request(service: Any, action: str | None) -> dict[str, Any] | None:
    """The ``abort`` kwarg of a trigger: the spec's JSON and the action (None: no abort)."""
    if action is None:
        return None
    if hasattr(service, "model_dump"):
        service = service.model_dump(mode="json")
    return check_abort({"service": service, "action": action})


def check_abort(abort: dict[str, Any] | None) -> dict[str, Any] | None:
    """A copy of a trigger's ``abort`` kwarg, refused at once if malformed (not mid-release)."""
    if abort is None:
        return None
    if not isinstance(abort, dict) or not isinstance(abort.get("service"), dict):
        raise ValueError("abort must be {'service': <ServiceSpec JSON>, 'action': ...}")
    action = abort.get("action")
    if action not in _ACTIONS:
        raise ValueError(f"abort action must be one of {', '.join(ABORT_ACTIONS)}, got {action!r}")
    return {"service": dict(abort["service"]), "action": action}


def describe_abort(abort: dict[str, Any], decided_at: float | None = None) -> str:
    """One line on what a trigger did to traffic (an event's ``abort``), for task logs."""
    after = f" {abort['done_at'] - decided_at:.3f} s after the verdict" if decided_at else ""
    if abort.get("error"):
        return f"the trigger's {abort['action']} failed{after}: {abort['error']}"
    if abort.get("note"):
        return f"the trigger started the undo ({abort['action']}){after}: {abort['note']}"
    return f"the trigger took traffic off the new version ({abort['action']}){after}: {abort['split_after']}"


class TrafficAbort:
    """One abort action on one service's router, run from a trigger.

    :param abort: ``{"service": <ServiceSpec JSON>, "action": <one of ABORT_ACTIONS>}``.
    :param log: the trigger's logger.
    """

    def __init__(self, abort: dict[str, Any], log: Any) -> None:
        checked = check_abort(abort) or {}
        self.service = checked["service"]
        self.action = checked["action"]
        self.log = log
        self._router: TrafficRouter | None = None

    async def prepare(self) -> None:
        """Build the router ahead of time (imports, spec parsing), so an abort is only the call.

        A router that cannot be built is not an error yet: ``perform`` tries again and records why.
        """
        try:
            self._router = await asyncio.to_thread(_build_router, self.service)
        except Exception as exc:
            self.log.warning("router for the abort not ready yet: %s: %s", type(exc).__name__, exc)

    async def perform(self) -> dict[str, Any]:
        """Do the action, read the split back; what happened, for the event (never raises).

        A rolling release in place (``WorkloadDriver.abort_roll``) has no split a router can
        change: ``weight_zero`` then starts the platform's undo instead.
        """
        if self.action == "weight_zero":
            rolled = await self._abort_roll()
            if rolled is not None:
                return rolled
        call, act, done = _ACTIONS[self.action]
        started_at = time.time()
        errors: list[str] = []
        split: TrafficSplit | None = None
        router = self._router
        try:
            if router is None:
                router = self._router = await asyncio.to_thread(_build_router, self.service)
            await asyncio.to_thread(act, router)
        except Exception as exc:
            errors.append(f"{call} failed: {type(exc).__name__}: {exc}")
        if router is not None:
            try:
                split = await asyncio.to_thread(router.verify_weight)
            except Exception as exc:
                errors.append(f"verify_weight() failed: {type(exc).__name__}: {exc}")
        if split is not None and not done(split):
            errors.append(
                f"after {call} the router still sends {split.canary:g} % to the new version"
                + (" and its preview route is on" if split.preview else "")
            )
        record = {
            "action": self.action,
            "started_at": started_at,
            "done_at": time.time(),
            "split_after": split.to_dict() if split is not None else None,
            "error": "; ".join(errors) or None,
        }
        if record["error"]:
            self.log.error("abort %s: %s (the rollback task will try again)", self.action, record["error"])
        else:
            self.log.info(
                "abort %s done in %.3f s: split now %s",
                self.action,
                record["done_at"] - started_at,
                record["split_after"],
            )
        return record

    async def _abort_roll(self) -> dict[str, Any] | None:
        """The undo of a rolling release in place, started; None when the driver has none under way."""
        from opsdag.platforms.registry import driver_for

        started_at = time.time()
        try:
            driver = await asyncio.to_thread(driver_for, self.service)
            if not driver.rolls_in_place:
                return None
            note = await asyncio.to_thread(driver.abort_roll)
        except Exception as exc:
            note, error = None, f"abort_roll() failed: {type(exc).__name__}: {exc}"
        else:
            if note is None:
                return None
            error = None
        record = {
            "action": "undo_roll",
            "started_at": started_at,
            "done_at": time.time(),
            "split_after": None,
            "note": note,
            "error": error,
        }
        if error:
            self.log.error("abort undo_roll: %s (the rollback task will try again)", error)
        else:
            self.log.info("abort undo_roll started in %.3f s: %s", record["done_at"] - started_at, note)
        return record


def _build_router(service: dict[str, Any]) -> TrafficRouter:
    from opsdag.platforms.registry import router_for

    return router_for(service)


async def measuring(trigger: Any) -> tuple[Any, TrafficAbort | None]:
    """The measuring loop and the abort (prepared, or None) of a trigger that judges a canary.

    ``trigger`` has the serialised fields AnalysisTrigger and ApprovalWatchTrigger share:
    ``gate``, ``metrics``, ``selectors``, ``compare_with_stable``, ``prometheus_conn_id``,
    ``query_timeout``, ``abort`` and its ``log``.
    """
    from opsdag.hooks.prometheus import PrometheusHook
    from opsdag.spec.service import Metric
    from opsdag.triggers.analysis_run import AnalysisRun

    analysis = AnalysisRun(
        gate=trigger.gate,
        metrics=[Metric.model_validate(m) for m in trigger.metrics],
        selectors=trigger.selectors,
        compare_with_stable=trigger.compare_with_stable,
        hook=PrometheusHook(trigger.prometheus_conn_id, timeout=trigger.query_timeout),
        log=trigger.log,
    )
    traffic = TrafficAbort(trigger.abort, trigger.log) if trigger.abort else None
    if traffic:
        await traffic.prepare()
    return analysis, traffic

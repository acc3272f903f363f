"""What a trigger does to traffic on a failing verdict, and what its event then says.

The router is a stand-in here (the real HAProxy router is tested with the sandbox in
tests/integration/test_abort_in_trigger.py): these tests pin the record the event
carries for each action, and that a failing router never stops the event.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from opsdag.platforms.base import TrafficRouter, TrafficSplit
from opsdag.spec.service import ServiceSpec
from opsdag.triggers import traffic_abort
from opsdag.triggers.traffic_abort import TrafficAbort, abort_request, check_abort, describe_abort

LOG = logging.getLogger("test_traffic_abort")
SERVICE = {
    "name": "demo-api",
    "owners": ["platform-team"],
    "platform": {"kind": "sandbox"},
    "image": {"repository": "registry.opsdag.local/demo-api"},
    "canary": {"steps": [{"weight": 25, "bake": "10s"}, {"weight": 100, "bake": "10s"}]},
    "analysis": {"metrics": [{"name": "up", "query": "min(up{$canary})", "min": 1}]},
}


class RecordingRouter(TrafficRouter):
    """Keeps the split in memory; ``fail`` names a method that raises, ``ignore`` one that does nothing."""

    kind = "recording"
    can_preview = True

    def __init__(self, canary: int = 25, preview: bool = False, fail: str = "", ignore: str = "") -> None:
        self.canary, self.preview, self.fail, self.ignore = canary, preview, fail, ignore
        self.calls: list[str] = []

    @classmethod
    def from_spec(cls, spec: Any) -> RecordingRouter:
        return cls()

    def _call(self, name: str) -> bool:
        self.calls.append(name)
        if self.fail == name:
            raise ConnectionError(f"{name}: admin socket gone")
        return self.ignore != name

    def set_weight(self, percent: int) -> None:
        if self._call("set_weight"):
            self.canary = percent

    def set_preview(self, enabled: bool, share: float | None = None) -> None:
        if self._call("set_preview"):
            self.preview = enabled

    def verify_weight(self) -> TrafficSplit:
        self._call("verify_weight")
        return TrafficSplit(stable=100 - self.canary, canary=self.canary, preview=self.preview)


def perform(router: RecordingRouter, action: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setattr(traffic_abort, "_build_router", lambda service: router)
    return asyncio.run(TrafficAbort({"service": SERVICE, "action": action}, LOG).perform())


@pytest.mark.parametrize(
    ("action", "calls", "split"),
    [
        # the main route's actions leave the preview route as it is
        ("weight_zero", ["set_weight", "verify_weight"], {"stable": 100, "canary": 0, "preview": True}),
        ("switch_back", ["set_weight", "verify_weight"], {"stable": 100, "canary": 0, "preview": True}),
        ("preview_off", ["set_preview", "verify_weight"], {"stable": 75, "canary": 25, "preview": False}),
    ],
)
def test_each_action_is_one_router_call_then_the_split_read_back(
    action: str, calls: list[str], split: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    router = RecordingRouter(canary=25, preview=True)
    record = perform(router, action, monkeypatch)
    assert router.calls == calls
    assert record["action"] == action
    assert record["error"] is None
    assert {k: record["split_after"][k] for k in split} == split
    assert record["started_at"] <= record["done_at"]


def test_a_failing_router_call_is_recorded_with_the_split_still_in_force(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = perform(RecordingRouter(canary=25, fail="set_weight"), "weight_zero", monkeypatch)
    assert record["error"] == (
        "set_weight(0) failed: ConnectionError: set_weight: admin socket gone; "
        "after set_weight(0) the router still sends 25 % to the new version"
    )
    assert record["split_after"]["canary"] == 25


def test_a_router_that_cannot_be_read_back_is_an_error_too(monkeypatch: pytest.MonkeyPatch) -> None:
    record = perform(RecordingRouter(canary=25, fail="verify_weight"), "weight_zero", monkeypatch)
    assert record["error"] == "verify_weight() failed: ConnectionError: verify_weight: admin socket gone"
    assert record["split_after"] is None


def test_a_call_that_changes_nothing_is_not_taken_for_done(monkeypatch: pytest.MonkeyPatch) -> None:
    record = perform(RecordingRouter(canary=10, ignore="set_weight"), "weight_zero", monkeypatch)
    assert record["error"] == "after set_weight(0) the router still sends 10 % to the new version"
    record = perform(RecordingRouter(preview=True, ignore="set_preview"), "preview_off", monkeypatch)
    assert record["error"] == (
        "after set_preview(False) the router still sends 25 % to the new version and its preview route is on"
    )


def test_a_router_that_cannot_be_built_is_recorded_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_router(service: dict[str, Any]) -> TrafficRouter:
        raise LookupError("platform.router.kind: 'nginx' has no traffic router in this version of opsdag")

    monkeypatch.setattr(traffic_abort, "_build_router", no_router)
    abort = TrafficAbort({"service": SERVICE, "action": "switch_back"}, LOG)
    asyncio.run(abort.prepare())  # not an error yet: perform tries again
    record = asyncio.run(abort.perform())
    assert record["error"] == (
        'switch("stable") failed: LookupError: '
        "platform.router.kind: 'nginx' has no traffic router in this version of opsdag"
    )
    assert record["split_after"] is None


def test_the_abort_kwarg_is_the_spec_json_and_a_known_action() -> None:
    spec = ServiceSpec.model_validate(SERVICE)
    assert abort_request(spec, None) is None
    request = abort_request(spec, "weight_zero")
    assert request == {"service": spec.model_dump(mode="json"), "action": "weight_zero"}
    assert check_abort(request) == request
    with pytest.raises(ValueError, match="abort action must be one of weight_zero, switch_back, preview_off"):
        abort_request(spec, "weight_0")
    with pytest.raises(ValueError, match="abort must be"):
        check_abort({"action": "weight_zero"})


def test_the_task_log_says_what_was_done_and_how_long_after_the_verdict() -> None:
    done = {"action": "weight_zero", "done_at": 100.25, "split_after": {"canary": 0}, "error": None}
    assert describe_abort(done, 100.0) == (
        "the trigger took traffic off the new version (weight_zero) 0.250 s after the verdict: {'canary': 0}"
    )
    failed = {**done, "error": "set_weight(0) failed: boom"}
    assert describe_abort(failed) == "the trigger's weight_zero failed: set_weight(0) failed: boom"

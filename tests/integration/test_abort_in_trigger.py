"""Abort in the triggerer, on the real sandbox: demo fleet, HAProxy, Prometheus, load generator.

The triggers are driven directly with asyncio (their real ``run()``, as the triggerer
runs it). A failing verdict must have taken the canary's traffic off at HAProxy by the
time the event arrives; a passing one changes nothing; a router that cannot be reached
is recorded in the event, which still goes out. While an approval waits, the canary is
judged at its weight: a fault aborts; a person's answer ends the watch. Airflow's HITL
response reader is the only stand-in (the trigger is run outside Airflow here);
tests/integration/test_approval_watch_dag.py runs the operator with Airflow's own.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import yaml
from support.waiting import wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
WEIGHT = 25


@pytest.fixture(scope="module")
def spec() -> Any:
    """demo-api as in include/, measured every second (the sandbox's Prometheus scrapes every second)."""
    from opsdag.spec.service import ServiceSpec

    data = yaml.safe_load((ROOT / "include" / "services" / "demo-api.yaml").read_text())
    for metric in data["analysis"]["metrics"]:
        metric["interval"] = "1s"
        metric["initial_delay"] = "2s"
    return ServiceSpec.model_validate(data)


@pytest.fixture
def fleet(sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The session's sandbox with no canary, and ``prometheus_default`` pointing at its Prometheus."""
    connections = json.loads((sandbox.root / "connections.json").read_text())
    monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS_DEFAULT", json.dumps(connections["prometheus_default"]))
    sandbox.reset()
    yield sandbox
    sandbox.reset()


def canary_at(sandbox, spec, tag: str, weight: int, preview_share: float | None = None) -> dict[str, str]:
    """Start ``tag`` as the canary, wait until ready, send it ``weight`` % (and ``preview_share`` of
    the load on the preview route) and wait until Prometheus has every metric of it (as after a
    stage's initial delay); its metric selectors."""
    from opsdag.analysis.query import render_query
    from opsdag.hooks.prometheus import PrometheusHook
    from opsdag.platforms.registry import driver_for, router_for

    driver, router = driver_for(spec), router_for(spec)
    driver.start(sandbox.image(tag), spec.platform.instances)
    wait_for(lambda: driver.readiness().ready, 30, what=f"canary {tag} ready")
    router.set_weight(weight)
    assert router.verify_weight().canary == pytest.approx(weight, abs=1)
    if preview_share:
        router.set_preview(True, preview_share)
        assert router.verify_weight().preview
    selectors = driver.metric_selectors()
    hook = PrometheusHook()
    queries = [render_query(m.query, selectors) for m in spec.analysis.metrics]
    wait_for(
        lambda: all(hook.query(q) is not None for q in queries), 30, interval=0.5, what=f"{tag}'s metrics"
    )
    return selectors


def run_trigger(trigger: Any, *, timeout: float) -> tuple[dict[str, Any], float]:
    """Drive the trigger as the triggerer does: take its first event; payload and seconds."""

    async def first_event() -> Any:
        async for event in trigger.run():
            return event
        raise AssertionError("the trigger ended without an event")

    started = time.monotonic()
    event = asyncio.run(asyncio.wait_for(first_event(), timeout))
    return event.payload, time.monotonic() - started


def analysis_trigger(spec, selectors: dict[str, str], bake_s: float, abort: str | None) -> Any:
    from opsdag.triggers.analysis import AnalysisTrigger
    from opsdag.triggers.traffic_abort import abort_request

    now = time.time()
    return AnalysisTrigger(
        gate=f"stage_{WEIGHT}",
        metrics=[m.model_dump(mode="json") for m in spec.analysis.metrics],
        selectors=selectors,
        window_start=now,
        window_end=now + bake_s,
        abort=abort_request(spec, abort),
    )


def answers_since(sandbox, since: float) -> dict[str, int]:
    """The load generator's answers per version in its whole seconds after ``since``.

    A bucket ``t`` of its ``recent`` list holds the answers counted in the second before ``t``.
    """
    totals: dict[str, int] = {}
    for bucket in sandbox.counts().get("recent", []):
        if bucket["t"] - 1 >= since:
            for version, n in bucket["by_version"].items():
                totals[version] = totals.get(version, 0) + n
    return totals


def only_stable_answers(sandbox) -> bool:
    """Whether the next 50 answers of the load generator all come from the stable version."""
    first = sandbox.counts()
    wait_for(lambda: sandbox.counts()["total"] >= first["total"] + 50, 15, what="50 more answers")
    second = sandbox.counts()
    stable = sandbox.status()["stable"]["version"]
    new = {v: n - first["by_version"].get(v, 0) for v, n in second["by_version"].items()}
    return sum(new.values()) > 0 and new.get(stable, 0) == sum(new.values())


# -- the gate's trigger ----------------------------------------------------------------------


def test_failing_canary_is_at_zero_when_the_event_arrives(fleet, spec) -> None:
    from opsdag.platforms.registry import router_for

    selectors = canary_at(fleet, spec, "1.2.0-errors", WEIGHT)
    payload, elapsed = run_trigger(analysis_trigger(spec, selectors, 60, "weight_zero"), timeout=60)
    split = router_for(spec).verify_weight()  # read right after the event, before anything else

    assert payload["phase"] == "fail", payload["reason"]
    assert payload["reason"].startswith("error-rate ")
    assert elapsed < 30  # decided at a measurement, not at the end of the 60 s window
    assert (split.canary, split.stable, split.requested) == (0, 100, 0)
    abort = payload["abort"]
    assert abort["action"] == "weight_zero"
    assert abort["error"] is None
    assert abort["split_after"]["canary"] == 0
    to_safety = abort["done_at"] - payload["decided_at"]
    print(f"\ndecided_at -> weight 0 verified at HAProxy: {to_safety:.3f} s")
    assert 0 <= to_safety < 1.0
    # The load generator: nothing from the canary in the whole seconds after the abort ...
    wait_for(lambda: sandbox_second_after(fleet, abort["done_at"]), 10, what="a full second after the abort")
    assert answers_since(fleet, abort["done_at"]).get("1.2.0-errors", 0) == 0
    # ... and the stable version answers everything.
    assert wait_for(lambda: only_stable_answers(fleet), 20, what="every answer from stable")


def sandbox_second_after(sandbox, moment: float) -> bool:
    """Whether the load generator has counted a whole second that started after ``moment``."""
    return any(bucket["t"] - 1 >= moment for bucket in sandbox.counts().get("recent", []))


def test_healthy_canary_passes_and_keeps_its_weight(fleet, spec) -> None:
    from opsdag.platforms.registry import router_for

    selectors = canary_at(fleet, spec, "1.1.0", WEIGHT)
    payload, elapsed = run_trigger(analysis_trigger(spec, selectors, 6, "weight_zero"), timeout=40)

    assert payload["phase"] == "pass", payload["reason"]
    assert payload["abort"] is None
    assert elapsed >= 5.5
    assert router_for(spec).verify_weight().canary == pytest.approx(WEIGHT, abs=1)


def test_router_out_of_reach_is_recorded_and_the_event_still_goes_out(fleet, spec) -> None:
    from opsdag.platforms.registry import router_for

    selectors = canary_at(fleet, spec, "1.2.0-errors", WEIGHT)
    socket = fleet.layout.haproxy_socket
    hidden = socket.with_name("admin.sock.hidden")
    os.rename(socket, hidden)  # HAProxy keeps serving; its runtime API is out of reach
    try:
        payload, _ = run_trigger(analysis_trigger(spec, selectors, 60, "weight_zero"), timeout=60)
    finally:
        os.rename(hidden, socket)

    assert payload["phase"] == "fail"
    abort = payload["abort"]
    assert abort["action"] == "weight_zero"
    assert abort["error"].startswith("set_weight(0) failed: ")
    assert "unreachable" in abort["error"]
    assert abort["split_after"] is None  # nothing could be read back either
    # The error is honest: the canary still has its share; the rollback task's retry takes it off.
    router = router_for(spec)
    assert router.verify_weight().canary == pytest.approx(WEIGHT, abs=1)
    router.set_weight(0)
    assert router.verify_weight().canary == 0


def test_failing_preview_is_closed_before_the_event(fleet, spec) -> None:
    """Blue-green before the switch: the canary takes only the preview route's share; abort closes it."""
    from opsdag.platforms.registry import router_for

    selectors = canary_at(fleet, spec, "1.2.0-errors", 0, preview_share=0.3)
    payload, _ = run_trigger(analysis_trigger(spec, selectors, 60, "preview_off"), timeout=60)
    split = router_for(spec).verify_weight()

    assert payload["phase"] == "fail", payload["reason"]
    abort = payload["abort"]
    assert (abort["action"], abort["error"], abort["split_after"]["preview"]) == ("preview_off", None, False)
    assert (split.preview, split.canary) == (False, 0)
    print(f"\ndecided_at -> preview closed: {abort['done_at'] - payload['decided_at']:.3f} s")


# -- the readiness trigger -----------------------------------------------------------------


def readiness_trigger(spec, image: str, timeout_s: float) -> Any:
    from opsdag.triggers.rollout import RolloutStatusTrigger
    from opsdag.triggers.traffic_abort import abort_request

    return RolloutStatusTrigger(
        service=spec.model_dump(mode="json"),
        image=image,
        timeout_at=time.time() + timeout_s,
        poll_interval=0.5,
        abort=abort_request(spec, "weight_zero"),
    )


def test_batch_that_stops_answering_is_taken_off_before_the_event(fleet, spec) -> None:
    from opsdag.platforms.registry import router_for

    canary_at(fleet, spec, "1.1.0", WEIGHT)  # a rolling batch: already taking traffic
    frozen = [inst["pid"] for inst in fleet.state()["fleet"]["canary"]["instances"]]
    for pid in frozen:
        os.killpg(pid, signal.SIGSTOP)  # alive, but answers nothing: never ready again
    try:
        payload, _ = run_trigger(readiness_trigger(spec, fleet.image("1.1.0"), 3), timeout=30)
        split = router_for(spec).verify_weight()
    finally:
        for pid in frozen:
            os.killpg(pid, signal.SIGCONT)

    assert payload["status"] == "timeout", payload
    assert payload["reason"].startswith(f"{fleet.image('1.1.0')} not ready before the deadline: ")
    assert payload["abort"]["error"] is None
    # HAProxy's checks already keep traffic off instances that do not answer; the weight asked for
    # is 0 now too, so they get none when they answer again.
    assert (split.canary, split.requested) == (0, 0)
    print(f"\nreadiness timeout -> weight 0: {payload['abort']['done_at'] - payload['decided_at']:.3f} s")


def test_ready_batch_is_left_as_it_is(fleet, spec) -> None:
    from opsdag.platforms.registry import router_for

    canary_at(fleet, spec, "1.1.0", WEIGHT)
    payload, _ = run_trigger(readiness_trigger(spec, fleet.image("1.1.0"), 10), timeout=30)
    assert payload["status"] == "ready"
    assert payload["abort"] is None
    assert router_for(spec).verify_weight().canary == pytest.approx(WEIGHT, abs=1)


def test_version_that_crashes_fails_readiness_with_the_abort_done(fleet, spec) -> None:
    from opsdag.platforms.registry import driver_for

    driver_for(spec).start(fleet.image("1.4.0-crash"), spec.platform.instances)
    payload, _ = run_trigger(readiness_trigger(spec, fleet.image("1.4.0-crash"), 30), timeout=40)
    assert payload["status"] == "failed"
    assert "exit" in payload["reason"]
    assert payload["abort"]["error"] is None
    assert payload["abort"]["split_after"]["canary"] == 0


# -- the approval wait ---------------------------------------------------------------------


@pytest.fixture
def hitl_answer(monkeypatch: pytest.MonkeyPatch) -> Callable[[str | None], None]:
    """Stands in for Airflow's HITL response reader: ``answer("Reject")`` records a response."""
    from airflow.sdk.api.datamodels._generated import HITLDetailResponse

    from opsdag.triggers import hitl_response

    chosen: dict[str, Any] = {"options": None}

    def detail(ti_id: Any) -> HITLDetailResponse:
        options = chosen["options"]
        return HITLDetailResponse(
            response_received=options is not None,
            responded_at=datetime.now(UTC) if options else None,
            chosen_options=options,
            responded_by_user={"id": "alice", "name": "alice"} if options else None,
        )

    monkeypatch.setattr(hitl_response, "read_response", detail)
    return lambda option: chosen.update(options=[option] if option else None)


def approval_trigger(spec, selectors: dict[str, str]) -> Any:
    from opsdag.triggers.approval_watch import ApprovalWatchTrigger
    from opsdag.triggers.traffic_abort import abort_request

    return ApprovalWatchTrigger(
        hitl={
            "ti_id": uuid4(),
            "options": ["Approve", "Reject"],
            "params": {},
            "defaults": None,
            "multiple": False,
            "timeout_datetime": datetime.now(UTC) + timedelta(minutes=10),
            "poke_interval": 0.5,
        },
        gate="stage_50.approval",
        metrics=[m.model_dump(mode="json") for m in spec.analysis.metrics],
        selectors=selectors,
        abort=abort_request(spec, "weight_zero"),
    )


def test_fault_while_an_approval_waits_aborts_before_any_answer(fleet, spec, hitl_answer) -> None:
    from opsdag.platforms.registry import router_for

    hitl_answer(None)  # nobody answers
    selectors = canary_at(fleet, spec, "1.2.0-errors", WEIGHT)
    payload, elapsed = run_trigger(approval_trigger(spec, selectors), timeout=60)
    split = router_for(spec).verify_weight()

    assert payload["source"] == "analysis"
    assert payload["phase"] == "fail"
    assert payload["reason"].startswith("error-rate ")
    assert payload["window_ended"] is False
    assert payload["abort"]["error"] is None
    assert split.canary == 0
    print(
        f"\napproval wait: failing verdict after {elapsed:.1f} s; "
        f"decided_at -> weight 0: {payload['abort']['done_at'] - payload['decided_at']:.3f} s"
    )


def test_answer_while_the_canary_is_healthy_ends_the_watch_without_abort(fleet, spec, hitl_answer) -> None:
    import threading

    from opsdag.platforms.registry import router_for

    hitl_answer(None)
    selectors = canary_at(fleet, spec, "1.1.0", WEIGHT)
    timer = threading.Timer(4, hitl_answer, args=("Reject",))
    timer.start()
    try:
        payload, elapsed = run_trigger(approval_trigger(spec, selectors), timeout=30)
    finally:
        timer.cancel()

    assert payload["chosen_options"] == ["Reject"]
    assert payload["responded_by_user"] == {"id": "alice", "name": "alice"}
    assert "abort" not in payload and "source" not in payload
    assert elapsed >= 3.5  # the healthy canary was watched until the answer
    assert router_for(spec).verify_weight().canary == pytest.approx(WEIGHT, abs=1)

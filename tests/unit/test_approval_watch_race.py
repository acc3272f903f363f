"""The approval wait: a person's answer and the canary's verdict raced, the first to decide wins.

No servers here: the response reader, the measuring loop and the router are stand-ins;
tests/integration/test_abort_in_trigger.py and test_approval_watch_dag.py run the real ones.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import pytest

from opsdag.triggers import hitl_response
from opsdag.triggers.analysis_run import AnalysisRun, Verdict
from opsdag.triggers.approval_watch import ApprovalWatchTrigger
from opsdag.triggers.hitl_response import answered, wait_for_answer
from opsdag.triggers.traffic_abort import TrafficAbort

LOG = logging.getLogger("test_approval_wait")
SERVICE = {
    "name": "demo-api",
    "owners": ["platform-team"],
    "platform": {"kind": "sandbox"},
    "image": {"repository": "registry.opsdag.local/demo-api"},
    "canary": {"steps": [{"weight": 25, "bake": "10s", "approval": True}, {"weight": 100, "bake": "10s"}]},
    "analysis": {"metrics": [{"name": "up", "query": "min(up{$canary})", "min": 1}]},
}
ALICE = {"id": "alice", "name": "alice"}


def response(options: list[str] | None, user: dict[str, str] | None = ALICE) -> SimpleNamespace:
    return SimpleNamespace(
        response_received=options is not None,
        chosen_options=options,
        params_input={},
        responded_at=datetime(2026, 11, 29, 12, 0, tzinfo=UTC) if options else None,
        responded_by_user=user if options else None,
    )


# -- reading the answer --------------------------------------------------------------------


def test_a_recorded_answer_is_the_hitl_operator_s_own_payload() -> None:
    assert answered(None) is None
    assert answered(response(None)) is None
    assert answered(response(["Reject"])) == {
        "chosen_options": ["Reject"],
        "params_input": {},
        "responded_at": datetime(2026, 11, 29, 12, 0, tzinfo=UTC),
        "responded_by_user": ALICE,
        "timedout": False,
    }
    # a response without a person is the timeout's defaults, recorded by an earlier try
    assert answered(response(["Approve"], user=None))["timedout"] is True


def wait(monkeypatch: pytest.MonkeyPatch, reads: list[Any], **hitl: Any) -> dict[str, Any]:
    """``wait_for_answer`` over a reader that returns (or raises) ``reads`` in turn, then the last."""

    def read(ti_id: Any) -> Any:
        item = reads.pop(0) if len(reads) > 1 else reads[0]
        if isinstance(item, Exception):
            raise item
        return item

    monkeypatch.setattr(hitl_response, "read_response", read)
    kwargs = {"ti_id": uuid4(), "defaults": None, "params": {}, "timeout_datetime": None, "poke_interval": 0}
    return asyncio.run(asyncio.wait_for(wait_for_answer(**{**kwargs, **hitl}, log=LOG), 5))


def test_polls_until_answered_and_a_failed_read_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = [response(None), ConnectionError("API server restarting"), response(["Approve"])]
    assert wait(monkeypatch, reads)["chosen_options"] == ["Approve"]


def test_past_the_timeout_without_defaults_the_approval_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    assert wait(monkeypatch, [response(None)], timeout_datetime=past) == {
        "error": "The timeout has passed, and the response has not yet been received.",
        "error_type": "timeout",
    }


def test_an_answer_read_at_the_deadline_still_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    assert wait(monkeypatch, [response(["Reject"])], timeout_datetime=past)["chosen_options"] == ["Reject"]


def test_past_the_timeout_the_defaults_are_recorded_and_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    recorded: list[Any] = []
    at = datetime(2026, 11, 29, 13, 0, tzinfo=UTC)
    monkeypatch.setattr(
        hitl_response,
        "record_defaults",
        lambda ti_id, defaults, values: recorded.append((defaults, values)) or at,
    )
    payload = wait(
        monkeypatch,
        [response(None)],
        defaults=["Reject"],
        params={"note": {"value": "none", "schema": {}, "description": None}},
        timeout_datetime=datetime.now(UTC) - timedelta(seconds=1),
    )
    assert recorded == [(["Reject"], {"note": "none"})]
    assert payload == {
        "chosen_options": ["Reject"],
        "params_input": {"note": "none"},
        "responded_at": at,
        "responded_by_user": None,
        "timedout": True,
    }


# -- the race ------------------------------------------------------------------------------


def trigger() -> ApprovalWatchTrigger:
    return ApprovalWatchTrigger(
        hitl={
            "ti_id": uuid4(),
            "options": ["Approve", "Reject"],
            "params": {},
            "defaults": None,
            "multiple": False,
            "timeout_datetime": datetime(2030, 1, 1, tzinfo=UTC),
            "poke_interval": 0.01,
        },
        gate="stage_50.approval",
        metrics=SERVICE["analysis"]["metrics"],
        selectors={"canary": 'track="canary"', "stable": 'track="stable"'},
        abort={"service": SERVICE, "action": "weight_zero"},
    )


def race(
    monkeypatch: pytest.MonkeyPatch, *, verdict_after: float | None, answer_after: float | None
) -> tuple[dict[str, Any], list[str]]:
    """Run the trigger with the verdict and the answer arriving after the given seconds (None: never)."""
    done: list[str] = []

    async def until_final(self: AnalysisRun, **_: Any) -> Verdict:
        try:
            await asyncio.sleep(3600 if verdict_after is None else verdict_after)
        except asyncio.CancelledError:
            done.append("watch cancelled")
            raise
        return Verdict("fail", "up 0 < min 1 (failures 1 > failure_limit 0)", False, 1000.0)

    async def answer(self: ApprovalWatchTrigger) -> dict[str, Any]:
        try:
            await asyncio.sleep(3600 if answer_after is None else answer_after)
        except asyncio.CancelledError:
            done.append("answer cancelled")
            raise
        return answered(response(["Approve"]))

    async def perform(self: TrafficAbort) -> dict[str, Any]:
        done.append("abort")
        return {
            "action": self.action,
            "started_at": 1000.0,
            "done_at": 1000.01,
            "split_after": {},
            "error": None,
        }

    async def prepare(self: TrafficAbort) -> None:
        done.append("router prepared")

    monkeypatch.setattr(AnalysisRun, "until_final", until_final)
    monkeypatch.setattr(ApprovalWatchTrigger, "_answer", answer)
    monkeypatch.setattr(TrafficAbort, "perform", perform)
    monkeypatch.setattr(TrafficAbort, "prepare", prepare)

    async def first() -> dict[str, Any]:
        async for event in trigger().run():
            return event.payload
        raise AssertionError("no event")

    return asyncio.run(asyncio.wait_for(first(), 5)), done


def test_a_failing_verdict_before_any_answer_aborts_then_fails_the_approval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    payload, done = race(monkeypatch, verdict_after=0.01, answer_after=None)
    assert done == ["router prepared", "answer cancelled", "abort"]
    assert payload["source"] == "analysis"
    assert (payload["phase"], payload["gate"], payload["decided_at"]) == ("fail", "stage_50.approval", 1000.0)
    assert payload["abort"]["action"] == "weight_zero"


def test_an_answer_before_any_failing_verdict_ends_the_watch_without_abort(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    payload, done = race(monkeypatch, verdict_after=None, answer_after=0.01)
    assert done == ["router prepared", "watch cancelled"]
    assert payload["chosen_options"] == ["Approve"]
    assert "source" not in payload and "abort" not in payload


def test_both_at_once_the_failing_verdict_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    payload, done = race(monkeypatch, verdict_after=0, answer_after=0)
    assert payload["source"] == "analysis"
    assert "abort" in done


def test_kwargs_survive_airflow_s_serde_and_hold_no_secret() -> None:
    from airflow.sdk.serde import deserialize, serialize

    classpath, kwargs = trigger().serialize()
    assert classpath == "opsdag.triggers.approval_watch.ApprovalWatchTrigger"
    rebuilt = ApprovalWatchTrigger(**deserialize(serialize(kwargs)))
    assert rebuilt.serialize() == (classpath, kwargs)
    assert "password" not in repr(kwargs)


# -- the operator, as the DAG is built ------------------------------------------------------


def test_the_approval_operator_refuses_what_it_could_not_do_mid_release() -> None:
    from opsdag.operators.stage_approval import StageApprovalOperator
    from opsdag.spec.service import ServiceSpec

    spec = ServiceSpec.model_validate(SERVICE)
    base = {"task_id": "approval", "service": spec, "subject": "go on?"}
    with pytest.raises(ValueError, match="judging the canary at 25 % needs selectors"):
        StageApprovalOperator(**base, current_weight=25)
    with pytest.raises(ValueError, match="abort action must be one of"):
        StageApprovalOperator(**base, current_weight=25, selectors={}, abort_action="zero")
    approval = StageApprovalOperator(
        **base, current_weight=25, selectors="{{ x }}", abort_action="weight_zero"
    )
    assert "selectors" in approval.template_fields
    assert approval.fail_on_reject is True
    waiting_only = StageApprovalOperator(**base)  # at 0 %: nothing to judge, it only waits
    assert waiting_only.current_weight == 0


def test_the_gate_refuses_an_unknown_abort_action_when_the_dag_is_built() -> None:
    from opsdag.operators.gate import HealthGateOperator

    with pytest.raises(ValueError, match="abort action must be one of weight_zero, switch_back, preview_off"):
        HealthGateOperator(
            task_id="gate", service=SERVICE, weight=25, bake="10s", selectors={}, abort_action="rollback"
        )

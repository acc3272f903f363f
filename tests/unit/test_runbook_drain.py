"""``drain_canary``: what there is to drain, the drain through a router and driver, the step's guards."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from opsdag.platforms.base import CANARY, TrackState, TrafficSplit, WorkloadStatus
from opsdag.runbooks.drain import DrainFailed, drain, drain_plan, drained_problems
from opsdag.spec.runbook import RunbookSpec

STABLE = TrackState("demo-api:1.0.0", 2, 2)
CANARY_UP = TrackState("demo-api:1.5.0", 1, 1)


def status(canary: TrackState | None = None, stable: TrackState | None = STABLE) -> WorkloadStatus:
    return WorkloadStatus(stable=stable, canary=canary, capacity=6)


def split(canary: float) -> TrafficSplit:
    return TrafficSplit(stable=100 - canary, canary=canary, requested=int(canary))


@pytest.mark.parametrize(
    ("st", "sp", "zero", "remove", "words"),
    [
        (status(CANARY_UP), split(20), True, True, "take the canary's 20 % of the traffic to 0 and remove"),
        (status(CANARY_UP), split(0), False, True, "remove the canary demo-api:1.5.0"),
        (status(), split(10), True, False, "take the canary's 10 % of the traffic to 0"),
        (status(), split(0), False, False, "nothing to drain"),
    ],
)
def test_the_plan_drains_only_what_there_is(st, sp, zero, remove, words) -> None:
    plan = drain_plan(st, sp)
    assert (plan.zero_weight, plan.remove, plan.needed) == (zero, remove, zero or remove)
    assert words in plan.describe()


def test_drained_means_no_weight_no_canary_and_a_healthy_stable() -> None:
    assert drained_problems(status(), split(0)) == []
    assert drained_problems(status(CANARY_UP, TrackState("demo-api:1.0.0", 2, 1)), split(5)) == [
        "the router still sends 5 % to the canary",
        "the canary demo-api:1.5.0 still runs (1 instance(s))",
        "the stable track is not healthy (1 of 2 instance(s) ready)",
    ]


class FakePlatform:
    """A driver and a router in one: records the calls, the canary leaves when removed."""

    def __init__(self, weight: float = 25, canary: TrackState | None = CANARY_UP, sticky: bool = False):
        self.weight, self.canary, self.sticky, self.calls = weight, canary, sticky, []

    def status(self) -> WorkloadStatus:
        return status(self.canary)

    def verify_weight(self) -> TrafficSplit:
        return split(self.weight)

    def set_weight(self, percent: int) -> None:
        self.calls.append(("set_weight", percent))
        self.weight = percent

    def remove(self, track: str) -> None:
        self.calls.append(("remove", track))
        if not self.sticky:
            self.canary = None


def test_drain_zeroes_the_weight_before_removing_the_canary() -> None:
    fake = FakePlatform()
    done = drain(fake, fake, timeout_s=1, poll_s=0.01)
    assert fake.calls == [("set_weight", 0), ("remove", CANARY)]
    assert (done.plan.canary_weight, done.split.canary, done.status.canary) == (25, 0, None)


def test_a_canary_that_does_not_go_is_a_failed_drain_naming_it() -> None:
    fake = FakePlatform(weight=0, sticky=True)
    with pytest.raises(DrainFailed, match=r"not drained after 0.05 s: the canary demo-api:1.5.0 still runs"):
        drain(fake, fake, timeout_s=0.05, poll_s=0.01)
    assert fake.calls == [("remove", CANARY)]  # the weight was 0 already: not set again


RUNBOOK = {
    "name": "drain-demo-api",
    "alerts": [{"name": "HighCanaryErrorRate", "matchers": {"service": "demo-api"}}],
    "steps": [{"action": "drain_canary", "name": "drain", "service": "demo-api"}],
}


def test_the_spec_step_is_a_destructive_mitigation() -> None:
    spec = RunbookSpec.model_validate(RUNBOOK)
    [step] = spec.steps
    assert (step.destructive, step.step_kind, step.timeout) == (True, "mitigate", timedelta(seconds=60))
    assert spec.plan(dry_run=False)[0]["needs_approval"] is True


class FakeTI:
    def __init__(self, active: dict[str, int], answer: dict[str, Any] | None = None) -> None:
        self.active, self.answer, self.pushed = active, answer, {}

    def get_dr_count(self, dag_id: str, states: list[str]) -> int:
        return self.active.get(dag_id, 0)

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> Any:
        return self.answer

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def operator(monkeypatch, fake: FakePlatform, **guards):
    from opsdag.operators.runbook_service import DrainCanaryOperator

    spec = RunbookSpec.model_validate({**RUNBOOK, "guards": guards})
    op = DrainCanaryOperator(runbook=spec, index=0, approval_task_id="approve_drain")
    monkeypatch.setattr(DrainCanaryOperator, "platform", lambda self: (fake, fake))
    return op


def context(ti: FakeTI, dry_run: bool) -> dict[str, Any]:
    labels = {"alertname": "HighCanaryErrorRate", "service": "demo-api"}
    return {"ti": ti, "params": {"dry_run": dry_run, "alert": {"labels": labels}}}


APPROVED = {"chosen_options": ["Approve"], "responded_by_user": {"name": "ana"}}


def test_the_step_drains_once_approved(monkeypatch) -> None:
    from opsdag.runbooks.engine import now

    fake = FakePlatform()
    result, detail, data, approval = operator(monkeypatch, fake).perform(
        context(FakeTI({}, APPROVED), dry_run=False), now()
    )
    assert result == "done" and detail.startswith("drained in ")
    assert "take the canary's 25 % of the traffic to 0 and remove the canary demo-api:1.5.0" in detail
    assert detail.endswith("stable demo-api:1.0.0 takes 100 % (approved by ana)")
    assert approval == {"needs_approval": True, "approved_by": "ana"}
    assert data["after"]["split"]["canary"] == 0 and data["before"]["split"]["canary"] == 25


def test_a_dry_run_plans_and_changes_nothing(monkeypatch) -> None:
    from opsdag.runbooks.engine import now

    fake = FakePlatform()
    result, detail, _, _ = operator(monkeypatch, fake).perform(context(FakeTI({}), dry_run=True), now())
    assert (result, fake.calls) == ("planned", [])
    assert detail == (
        "dry run: would take the canary's 25 % of the traffic to 0 and remove the canary demo-api:1.5.0"
    )


def test_a_release_in_flight_holds_the_canary_and_the_step_refuses_unchanged(monkeypatch) -> None:
    from opsdag.operators.runbook_steps import StopRunbook
    from opsdag.runbooks.engine import now

    fake = FakePlatform()
    op = operator(monkeypatch, fake)
    with pytest.raises(StopRunbook) as stop:
        op.perform(context(FakeTI({"release__demo-api": 1}, APPROVED), dry_run=False), now())
    assert str(stop.value) == (
        "refused, nothing changed: release__demo-api (1 run in flight) is acting on demo-api; "
        "one actor per service"
    )
    assert stop.value.escalate is True and fake.calls == []


def test_nothing_to_drain_is_done_without_a_change(monkeypatch) -> None:
    from opsdag.runbooks.engine import now

    fake = FakePlatform(weight=0, canary=None)
    result, detail, _, _ = operator(monkeypatch, fake).perform(
        context(FakeTI({}, APPROVED), dry_run=False), now()
    )
    assert (result, detail, fake.calls) == (
        "done",
        "no canary runs and it takes no traffic: nothing to drain",
        [],
    )

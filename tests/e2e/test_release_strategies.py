"""Blue-green and rolling releases of demo-api on the sandbox, end to end, and strategies refused.

Each faulty release must leave exactly the state it found: the previous version on its
instance count, all the traffic, no new version left running.
"""

from __future__ import annotations

import pytest
from support.waiting import wait_for
from test_release_canary import measured_share, stage_status, traffic

pytestmark = pytest.mark.e2e


def instances(sandbox) -> int:
    return len(sandbox.status()["stable"]["instances"])


def main_route_answers(sandbox, version: str) -> int:
    """Answers from ``version`` the load generator counted on the main route (users' traffic)."""
    return sandbox.counts()["by_version"].get(version, 0)


def test_bluegreen_healthy_version_is_judged_on_preview_then_switched(run_release, sandbox) -> None:
    run = run_release({"image": sandbox.image("1.1.0"), "strategy": "bluegreen"})

    assert run.report is not None, run.output[-3000:]
    assert run.report["status"] == "promoted", run.output[-3000:]
    assert run.report["strategy"] == "bluegreen"
    assert stage_status(run.report) == {"preview": "passed", "active": "passed"}
    assert traffic(sandbox) == {"stable": "1.1.0", "canary": None, "weight": 0}
    assert instances(sandbox) == 2
    assert wait_for(lambda: measured_share(sandbox, "1.1.0"), 20, what="1.1.0 answers every request") == 1.0


def test_bluegreen_faulty_version_is_caught_on_preview_and_users_never_see_it(run_release, sandbox) -> None:
    before = main_route_answers(sandbox, "1.2.0-errors")
    run = run_release({"image": sandbox.image("1.2.0-errors"), "strategy": "bluegreen"})

    assert run.report is not None, run.output[-3000:]
    assert run.report["status"] == "rolled_back", run.output[-3000:]
    assert stage_status(run.report) == {"preview": "failed", "active": "skipped"}
    assert "error-rate" in run.report["stages"][0]["reason"]
    assert main_route_answers(sandbox, "1.2.0-errors") == before  # only the preview route reached it
    assert traffic(sandbox) == {"stable": "1.0.0", "canary": None, "weight": 0}
    assert instances(sandbox) == 2


def test_bluegreen_fault_after_the_switch_switches_back(run_release, sandbox) -> None:
    # healthy for 10 s (the preview passes), then half its answers are errors: caught after the switch
    run = run_release({"image": sandbox.image("1.5.0-late"), "strategy": "bluegreen"})

    assert run.report is not None, run.output[-3000:]
    assert run.report["status"] == "rolled_back", run.output[-3000:]
    assert stage_status(run.report)["active"] == "failed", run.report["stages"]
    assert traffic(sandbox) == {"stable": "1.0.0", "canary": None, "weight": 0}
    assert instances(sandbox) == 2
    assert wait_for(lambda: measured_share(sandbox, "1.0.0"), 20, what="1.0.0 answers every request") == 1.0


def test_rolling_healthy_version_replaces_every_instance(run_release, sandbox) -> None:
    run = run_release({"image": sandbox.image("1.1.0"), "strategy": "rolling"})

    assert run.report is not None, run.output[-3000:]
    assert run.report["status"] == "promoted", run.output[-3000:]
    assert stage_status(run.report) == {"batch_1": "passed", "batch_2": "passed"}
    assert traffic(sandbox) == {"stable": "1.1.0", "canary": None, "weight": 0}
    assert instances(sandbox) == 2
    assert wait_for(lambda: measured_share(sandbox, "1.1.0"), 20, what="1.1.0 answers every request") == 1.0


def test_rolling_faulty_version_is_undone_on_every_replaced_instance(run_release, sandbox) -> None:
    run = run_release({"image": sandbox.image("1.2.0-errors"), "strategy": "rolling"})

    assert run.report is not None, run.output[-3000:]
    assert run.report["status"] == "rolled_back", run.output[-3000:]
    assert stage_status(run.report) == {"batch_1": "failed", "batch_2": "skipped"}
    # the exact previous state: 1.0.0 on both instances, all the traffic, nothing of 1.2.0 left
    assert traffic(sandbox) == {"stable": "1.0.0", "canary": None, "weight": 0}
    assert instances(sandbox) == 2
    assert wait_for(lambda: measured_share(sandbox, "1.0.0"), 20, what="1.0.0 answers every request") == 1.0


def test_rolling_version_that_crashes_is_undone_before_any_traffic(run_release, sandbox) -> None:
    before = main_route_answers(sandbox, "1.4.0-crash")
    run = run_release({"image": sandbox.image("1.4.0-crash"), "strategy": "rolling"})

    assert run.report is not None, run.output[-3000:]
    assert run.report["status"] == "rolled_back"
    assert set(stage_status(run.report).values()) == {"skipped"}
    assert main_route_answers(sandbox, "1.4.0-crash") == before == 0
    assert traffic(sandbox) == {"stable": "1.0.0", "canary": None, "weight": 0}
    assert instances(sandbox) == 2


def test_a_strategy_the_service_cannot_do_is_refused_before_any_change(run_release, sandbox) -> None:
    before = sandbox.status()
    run = run_release(
        {"image": sandbox.image("1.1.0"), "strategy": "rolling"}, dag_id="release__demo-api-canary-only"
    )

    assert run.report is not None, run.output[-3000:]
    assert run.report["status"] == "refused"
    assert (
        "strategy: demo-api-canary-only cannot be released with rolling: its spec has no rolling section"
        in run.report["summary"]
    ), run.report["summary"]
    after = sandbox.status()
    assert (after["stable"], after["canary"], after["canary_weight"]) == (
        before["stable"],
        before["canary"],
        before["canary_weight"],
    )


def test_an_undeclared_tag_is_refused_in_a_dry_run_too_not_planned(run_release, sandbox) -> None:
    run = run_release({"image": sandbox.image("1.1.0").replace("1.1.0", "9.9.9"), "dry_run": True})

    assert run.report is not None, run.output[-3000:]
    assert run.report["status"] == "refused", run.report["summary"]
    assert "9.9.9" in run.report["summary"] and "not declared" in run.report["summary"], run.report["summary"]


@pytest.mark.parametrize("strategy", ["canary", "bluegreen", "rolling"])
def test_a_dry_run_plans_every_strategy_and_changes_nothing(run_release, sandbox, strategy) -> None:
    before = sandbox.status()
    run = run_release({"image": sandbox.image("1.1.0"), "strategy": strategy, "dry_run": True})

    assert run.report is not None, run.output[-3000:]
    assert run.report["status"] == "planned", run.report["summary"]
    assert run.report["stages"], "the plan lists the stages"
    assert set(stage_status(run.report).values()) == {"skipped"}
    after = sandbox.status()
    assert (after["stable"], after["canary"], after["canary_weight"]) == (
        before["stable"],
        before["canary"],
        before["canary_weight"],
    )

"""``drain_canary`` on the sandbox: a canary taking traffic is drained through the real router
(HAProxy) and driver, and the load generator's answers then come from the stable version only."""

from __future__ import annotations

import pytest
from support.sandbox import SandboxHandle
from support.waiting import wait_for

from opsdag.runbooks.drain import drain, drain_plan

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def sbx(sandbox: SandboxHandle):
    """The session sandbox without a canary and with its initial stable, before and after."""
    sandbox.reset()
    yield sandbox
    sandbox.reset()


def test_a_canary_taking_traffic_is_drained_and_only_stable_answers(sbx: SandboxHandle) -> None:
    driver, router = sbx.driver(), sbx.router()
    stable = driver.status().stable.image
    driver.start(sbx.image("1.1.0"), 1)
    wait_for(lambda: driver.readiness().ready, 20, what="canary 1.1.0 ready")
    router.set_weight(40)
    wait_for(lambda: sbx.counts()["by_version"].get("1.1.0", 0) > 10, 15, what="answers from the canary")
    plan = drain_plan(driver.status(), router.verify_weight())
    assert (plan.zero_weight, plan.remove, plan.canary_image) == (True, True, sbx.image("1.1.0"))

    done = drain(driver, router, timeout_s=30)

    assert done.split.canary == 0 and done.status.canary is None
    assert done.status.stable.image == stable and done.status.stable_healthy
    assert sbx.status()["canary"] is None

    def only_stable() -> bool:
        recent = sbx.counts()["recent"]
        return len(recent) >= 2 and all(set(b["by_version"]) == {"1.0.0"} for b in recent[-2:])

    wait_for(only_stable, 10, what="a full second answered only by the stable 1.0.0")
    # drained already: a second drain has nothing to do
    assert not drain_plan(driver.status(), router.verify_weight()).needed

"""Operators that move traffic through the service's router: a weight, a switch, the preview route.

Each reads back the split really in force (``verify_weight``) and pushes it, so the
report shows what the router did, not only what was asked.
"""

from __future__ import annotations

import time
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from opsdag.operators.service_base import ServiceOperator
from opsdag.triggers.traffic_abort import abort_request, describe_abort
from opsdag.triggers.weight_settle import WeightSettledTrigger


class SetWeightOperator(ServiceOperator):
    """Send ``weight`` % of the traffic to the new version (idempotent).

    Fails when the router reports an exact split other than the one asked for. A router
    that cannot split exactly (a replica ratio) says the split it gives in words, in the
    log and the XCom's ``said``: "asked 10 %, got 1 of 5 replicas = 20 %".

    Behind a router whose change is in force only later (``settles_later``: a replica ratio,
    once the canary's new pods take traffic), the change is made at once and, unless already
    in force, waited for deferred (``WeightSettledTrigger``) up to the router's
    ``settle_timeout``: pods slow to start never hold a worker slot. A retry makes the same
    change (none if it is made) and waits again. A canary failing meanwhile fails the task
    with why (the trigger has taken its traffic off; the rollback follows). A timeout does
    not: the canary's ready pods already take their share, ``verify_weight`` reads that real
    split back, ``said`` tells it beside the percent asked and the stage's gate judges the
    canary on it (as ``set_weight`` returning at its timeout did). A canary that will never
    be ready is found failed (crash, pull, progress deadline), not timed out.
    """

    def __init__(self, *, weight: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weight = weight

    def run(self, context: Any) -> dict[str, Any]:
        self.skip_unless_moving(context, f"send {self.weight} % of the traffic to the new version")
        self.router.start_weight(self.weight)
        if self.router.settles_later and not (settled := self.router.weight_settled()).ready:
            self.log.info("%d %% set, waiting (deferred) until in force: %s", self.weight, settled.reason)
            self.defer(
                trigger=WeightSettledTrigger(
                    service=self.service.model_dump(mode="json"),
                    weight=self.weight,
                    timeout_at=time.time() + self.router.settle_timeout,
                    abort=abort_request(self.service, "weight_zero"),
                ),
                method_name="execute_complete",
            )
        return self.read_back()

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        if event["status"] == "failed":
            done = f"; {describe_abort(event['abort'], event['decided_at'])}" if event.get("abort") else ""
            raise AirflowFailException(
                f"{self.weight} % not reached, the new version failed: {event['reason']}{done}"
            )
        if event["status"] == "timeout":
            self.log.warning("%s; the split in force is read back", event["reason"])
        return self.read_back()

    def read_back(self) -> dict[str, Any]:
        """The split in force, checked against the weight asked (an exact one must be it)."""
        split = self.router.verify_weight()
        if split.exact and round(split.canary) != self.weight:
            raise AirflowFailException(f"asked for {self.weight} %, the router sends {split.canary:g} %")
        if not split.exact and not self.router.exact_split:
            said = self.ratio_said(split.requested)
            self.log.warning("not the split asked: %s", said)
            return {**split.to_dict(), "said": said}
        self.log.info("new version at %s %% (asked %d %%)", f"{split.canary:g}", self.weight)
        return split.to_dict()

    def ratio_said(self, requested: int | None) -> str:
        """The split of a replica ratio in words, from the instances taking traffic."""
        from opsdag.platforms.weights import ratio_sentence

        status = self.driver.status()
        canary = status.canary.ready_instances if status.canary else 0
        stable = status.stable.ready_instances if status.stable else 0
        return ratio_sentence(requested, canary, stable)


class SwitchOperator(ServiceOperator):
    """Blue-green: all traffic to the new colour in one router call."""

    def run(self, context: Any) -> dict[str, Any]:
        self.skip_unless_moving(context, "switch all traffic to the new colour")
        self.router.switch("canary")
        split = self.router.verify_weight()
        if split.canary != 100:
            raise AirflowFailException(f"switched, but the router sends {split.canary:g} % to the new colour")
        self.log.info("switched: the new colour takes all the traffic")
        return split.to_dict()


class OpenPreviewOperator(ServiceOperator):
    """Blue-green: open the preview route to the new colour (its only traffic until the switch).

    :param share: the share of the sandbox's synthetic load sent to the preview route.
    """

    def __init__(self, *, share: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.share = share

    def run(self, context: Any) -> dict[str, Any]:
        self.skip_unless_moving(context, "open the preview route to the new colour")
        self.router.set_preview(True, share=self.share)
        split = self.router.verify_weight()
        if not split.preview:
            raise AirflowFailException("the preview route does not reach the new colour")
        return split.to_dict()

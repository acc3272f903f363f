"""Operators that move traffic through the service's router: a weight, a switch, the preview route.

Each reads back the split really in force (``verify_weight``) and pushes it, so the
report shows what the router did, not only what was asked.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from opsdag.operators.service_base import ServiceOperator


class SetWeightOperator(ServiceOperator):
    """Send ``weight`` % of the traffic to the new version (idempotent).

    Fails when the router reports an exact split other than the one asked for. A router
    that cannot split exactly (a replica ratio) says the split it gives in words, in the
    log and the XCom's ``said``: "asked 10 %, got 1 of 5 replicas = 20 %".
    """

    def __init__(self, *, weight: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weight = weight

    def run(self, context: Any) -> dict[str, Any]:
        self.skip_unless_moving(context, f"send {self.weight} % of the traffic to the new version")
        self.router.set_weight(self.weight)
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

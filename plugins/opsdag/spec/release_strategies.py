"""How a release replaces the old version: the canary, blue-green and rolling sections of a service spec."""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise

from pydantic import Field, field_validator, model_validator

from opsdag.spec.common import Duration, FieldProblem, StrictModel


class CanaryStep(StrictModel):
    """One stage: route ``weight`` % of traffic to the canary, then judge it for ``bake``."""

    weight: int = Field(ge=1, le=100)
    bake: Duration
    approval: bool = Field(default=False, description="a person approves before this step starts")


class CanaryStrategy(StrictModel):
    steps: list[CanaryStep] = Field(min_length=1)

    @field_validator("steps")
    @classmethod
    def _weights_increase_to_100(cls, steps: list[CanaryStep]) -> list[CanaryStep]:
        for i, (previous, step) in enumerate(pairwise(steps), start=1):
            if step.weight <= previous.weight:
                raise FieldProblem(
                    (i, "weight"),
                    f"weights must strictly increase: {step.weight} comes after {previous.weight}",
                )
        if steps[-1].weight != 100:
            raise FieldProblem(
                (len(steps) - 1, "weight"),
                f"the last step must send 100 % of traffic, not {steps[-1].weight}",
            )
        return steps


class BlueGreenStrategy(StrictModel):
    """The new colour starts beside the active one and is judged on a preview route; one switch.

    ``scale_down_delay``: how long the old colour stays up after the switch, so that a
    switch back (the rollback) is one router call.
    """

    preview_share: float = Field(
        default=0.05, gt=0, le=0.5, description="share of the synthetic load sent to the preview route"
    )
    pre_promotion_bake: Duration
    post_promotion_bake: Duration
    scale_down_delay: Duration = timedelta(seconds=30)
    approval: bool = Field(default=False, description="a person approves the switch")


class RollingStrategy(StrictModel):
    """Instances replaced in batches, a gate after each batch.

    A batch adds up to ``max_surge`` new instances beyond the service's count and takes up
    to ``max_unavailable`` old ones out first; at least one of the two must be positive.
    """

    max_surge: int = Field(default=1, ge=0, le=8)
    max_unavailable: int = Field(default=0, ge=0, le=8)
    bake: Duration

    @model_validator(mode="after")
    def _makes_progress(self) -> RollingStrategy:
        if self.max_surge + self.max_unavailable < 1:
            raise FieldProblem(
                ("max_surge",), "max_surge and max_unavailable cannot both be 0: no batch could start"
            )
        return self

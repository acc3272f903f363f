"""The runbook spec: which alerts start it, what it does, and the guards around it.

Steps come from a catalogue; each action declares its arguments and whether it changes
anything (destructive), so guards can ask a person before a change at 3 a.m.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from opsdag.spec.common import DnsName, Duration, FieldProblem, StrictModel


class _Step(StrictModel):
    destructive: ClassVar[bool] = False
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")] | None = None


class CheckMetric(_Step):
    """Read a PromQL value and stop the runbook unless it is out of bounds (the alert still holds)."""

    action: Literal["check_metric"]
    query: str
    above: float | None = None
    below: float | None = None

    @model_validator(mode="after")
    def _has_a_bound(self) -> CheckMetric:
        if self.above is None and self.below is None:
            raise ValueError("give the bound that confirms the alert: above, below or both")
        return self


class Notify(_Step):
    action: Literal["notify"]
    message: str


class RollbackRelease(_Step):
    """Send all traffic back to the service's stable version and remove the canary."""

    destructive: ClassVar[bool] = True
    action: Literal["rollback_release"]
    service: DnsName


class RestartInstances(_Step):
    destructive: ClassVar[bool] = True
    action: Literal["restart_instances"]
    service: DnsName
    track: Literal["stable", "canary"] = "stable"


class ScaleService(_Step):
    destructive: ClassVar[bool] = True
    action: Literal["scale"]
    service: DnsName
    replicas: int = Field(ge=0, le=100)


class Wait(_Step):
    action: Literal["wait"]
    duration: Duration


Step = Annotated[
    CheckMetric | Notify | RollbackRelease | RestartInstances | ScaleService | Wait,
    Field(discriminator="action"),
]


class Guards(StrictModel):
    max_runs_per_hour: int = Field(default=3, ge=1)
    dry_run: bool = Field(default=True, description="plan and report only unless a run says otherwise")
    approval_for_destructive: bool = True


class RunbookSpec(StrictModel):
    """One runbook (include/runbooks/<name>.yaml)."""

    name: DnsName
    description: str = ""
    owners: list[str] = Field(default_factory=list)
    alerts: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    steps: list[Step] = Field(min_length=1)
    guards: Guards = Field(default_factory=Guards)

    @field_validator("alerts")
    @classmethod
    def _unique_alerts(cls, alerts: list[str]) -> list[str]:
        for i, alert in enumerate(alerts):
            if alert in alerts[:i]:
                raise FieldProblem((i,), f"the alert {alert!r} is listed twice")
        return alerts

    @field_validator("steps")
    @classmethod
    def _unique_step_names(cls, steps: list[_Step]) -> list[_Step]:
        """Step names become task ids: two equal names would break the DAG."""
        seen: set[str] = set()
        for i, step in enumerate(steps):
            if step.name is not None and step.name in seen:
                raise FieldProblem((i, "name"), f"step names must be unique; {step.name!r} is repeated")
            if step.name is not None:
                seen.add(step.name)
        return steps

    def plan(self, *, dry_run: bool) -> list[dict[str, object]]:
        """The steps a run would take, each marked destructive or not, for the report and the guards."""
        return [
            {
                "step": step.name or f"{i + 1}-{step.action}",
                "action": step.action,
                "destructive": step.destructive,
                "needs_approval": step.destructive and self.guards.approval_for_destructive,
                "dry_run": dry_run,
            }
            for i, step in enumerate(self.steps)
        ]

"""The record of an incident run, what its postmortem is written from (pydantic, no Airflow).

The runbook's steps fill it as they go: the alert as the run received it (the run conf's
``alert``, Alertmanager's ``startsAt``/``endsAt`` names kept), whether the run was a dry
run, each action with its result, the verification and the escalations. Times are
timezone-aware and kept in UTC, so figures computed from them mean the same everywhere.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

StepKind = Literal["diagnostics", "assess", "mitigate", "verify", "escalate", "postmortem"]
ActionResult = Literal["done", "skipped", "failed", "planned"]


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("a time needs its zone, e.g. 2026-11-30T04:00:00Z")
    return value.astimezone(UTC)


UtcTime = Annotated[datetime, AfterValidator(_utc)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IncidentAlert(BaseModel):
    """The alert that started the run; further keys Alertmanager may send are dropped."""

    model_config = ConfigDict(extra="ignore")

    name: str
    status: Literal["firing", "resolved"] = "firing"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: UtcTime
    endsAt: UtcTime | None = None
    fingerprint: str = ""
    generatorURL: str = ""

    @model_validator(mode="before")
    @classmethod
    def _name_from_labels(cls, data: Any) -> Any:
        """The run conf has ``name``; a raw Alertmanager alert has only ``labels.alertname``."""
        if isinstance(data, dict) and not data.get("name"):
            return {**data, "name": (data.get("labels") or {}).get("alertname")}
        return data


class IncidentAction(_Record):
    """One step the run took (or planned, or skipped), in the order it was taken."""

    step: str
    action: str = Field(description="the catalogue's action, e.g. terminate_idle_connections")
    kind: StepKind
    result: ActionResult
    started_at: UtcTime | None = None
    ended_at: UtcTime | None = None
    detail: str = ""
    destructive: bool = False
    needs_approval: bool = False
    approved_by: str | None = None
    data: dict[str, Any] = Field(default_factory=dict, description="the step's findings, for the JSON")

    @property
    def approval(self) -> str:
        """``approved by alice``, ``not approved`` or ``not needed``."""
        if self.approved_by:
            return f"approved by {self.approved_by}"
        return "not approved" if self.needs_approval else "not needed"

    @property
    def seconds(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


class IncidentVerification(_Record):
    """The verify step's verdict: recovered (and when that was seen) or not, and why."""

    recovered: bool
    at: UtcTime | None = None
    detail: str = ""

    @model_validator(mode="after")
    def _recovery_has_a_time(self) -> IncidentVerification:
        if self.recovered and self.at is None:
            raise ValueError("a verified recovery needs the time it was seen (at)")
        return self


class IncidentEscalation(_Record):
    """A person or team the run called in, when and why."""

    at: UtcTime
    to: str
    reason: str = ""


class IncidentRecord(_Record):
    """An incident run: the runbook, its alert, what it did, whether the service recovered."""

    runbook: str
    run_id: str = Field(min_length=1)
    dag_id: str = ""
    alert: IncidentAlert
    dry_run: bool
    actions: list[IncidentAction] = Field(default_factory=list)
    verify: IncidentVerification | None = None
    escalations: list[IncidentEscalation] = Field(default_factory=list)

    @model_validator(mode="after")
    def _default_dag_id(self) -> IncidentRecord:
        if not self.dag_id:
            self.dag_id = f"runbook__{self.runbook}"
        return self

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> IncidentRecord:
        """The record back from a postmortem's JSON (figures and timeline are derived: ignored)."""
        return cls.model_validate({key: data[key] for key in cls.model_fields if key in data})

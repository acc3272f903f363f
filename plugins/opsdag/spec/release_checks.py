"""What a release checks besides its gates: smoke requests to the new version, and preflight checks."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import Field, model_validator

from opsdag.spec.common import DnsName, Duration, StrictModel


class SmokeCheck(StrictModel):
    """One HTTP request to every instance of the new version, before it gets traffic."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
    path: Annotated[str, Field(pattern=r"^/[^\s]*$")]
    expect_status: int = Field(default=200, ge=100, le=599)
    timeout: Duration = timedelta(seconds=2)


class DependencyCheck(StrictModel):
    """A PromQL check that a dependency is healthy before a release starts (one value, within bounds)."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
    query: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _has_a_bound(self) -> DependencyCheck:
        if self.min is None and self.max is None:
            raise ValueError("give at least one bound: min or max")
        return self


class BackupFreshness(StrictModel):
    """The service's database must have a verified backup younger than ``max_age``."""

    database: DnsName
    max_age: Duration


class Preflight(StrictModel):
    """What must hold before a release changes anything, beyond the platform's own checks."""

    dependencies: list[DependencyCheck] = Field(default_factory=list)
    backup: BackupFreshness | None = None

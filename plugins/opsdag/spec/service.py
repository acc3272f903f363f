"""The service spec: where a service runs, how it is released and how a release is judged."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from opsdag.spec.common import DnsName, Duration, FieldProblem, StrictModel
from opsdag.spec.image import Image, ImageBuild, KanikoBuildSpec
from opsdag.spec.platform_kinds import (
    GatewayApiRouterSpec,
    HaproxyRouterSpec,
    KubernetesPlatformSpec,
    NginxRouterSpec,
    PlatformSpec,
    ReplicaRatioRouterSpec,
    SandboxPlatformSpec,
)
from opsdag.spec.release_checks import BackupFreshness, DependencyCheck, Preflight, SmokeCheck
from opsdag.spec.release_strategies import BlueGreenStrategy, CanaryStep, CanaryStrategy, RollingStrategy

Strategy = Literal["canary", "bluegreen", "rolling"]
_SECTION_HINT = {
    "canary": "canary.steps",
    "bluegreen": "a bluegreen section (pre_promotion_bake, post_promotion_bake)",
    "rolling": "a rolling section (bake, max_surge, max_unavailable)",
}
_PLACEHOLDER = re.compile(r"\$(canary|stable)\b")


class Metric(StrictModel):
    """A PromQL measurement and the bounds it must keep.

    ``$canary`` and ``$stable`` in a query are replaced by the platform's label matchers.
    Bounds are absolute (``max``/``min``) or relative to the stable baseline
    (``max_ratio``: canary <= max_ratio x baseline), as in "canary p95 <= 2 x stable p95".
    """

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
    query: str
    baseline_query: str | None = None
    max: float | None = None
    min: float | None = None
    max_ratio: float | None = Field(default=None, gt=0)
    baseline_floor: float = Field(
        default=0.0, ge=0, description="the baseline counts as at least this (avoids 2 x 0 = 0)"
    )
    interval: Duration = timedelta(seconds=5)
    initial_delay: Duration | None = Field(
        default=None, description="wait this long after a stage starts before measuring (fresh traffic)"
    )
    failure_limit: int = Field(default=0, ge=0)
    inconclusive_limit: int = Field(default=1, ge=0)
    min_requests: int | None = Field(
        default=None, ge=1, description="fewer canary requests than this in a measurement: inconclusive"
    )
    requests_query: str | None = Field(
        default=None, description="PromQL: how many requests the canary answered (needs $canary)"
    )

    @field_validator("query", "baseline_query")
    @classmethod
    def _has_placeholder(cls, value: str | None) -> str | None:
        if value is not None and not _PLACEHOLDER.search(value):
            raise ValueError("the query must select its workload with $canary or $stable")
        return value

    @field_validator("min")
    @classmethod
    def _min_below_max(cls, value: float | None, info: ValidationInfo) -> float | None:
        upper = info.data.get("max")
        if value is not None and upper is not None and value > upper:
            raise ValueError(f"min ({value}) is greater than max ({upper})")
        return value

    @field_validator("max_ratio")
    @classmethod
    def _ratio_needs_baseline(cls, value: float | None, info: ValidationInfo) -> float | None:
        # a baseline_query that failed its own validation is absent here: no second error for it
        if value is not None and info.data.get("baseline_query", "") is None:
            raise ValueError("max_ratio compares with the stable version: add baseline_query")
        return value

    @model_validator(mode="after")
    def _has_a_bound(self) -> Metric:
        if self.max is None and self.min is None and self.max_ratio is None:
            raise ValueError("give at least one bound: max, min or max_ratio")
        if self.min_requests is not None and self.requests_query is None:
            raise FieldProblem(("requests_query",), "min_requests needs requests_query to count the requests")
        if self.requests_query is not None and "$canary" not in self.requests_query:
            raise FieldProblem(
                ("requests_query",), "must count the canary's requests: select it with $canary"
            )
        return self


class Monitoring(StrictModel):
    """PromQL for the report's monitoring figures of the serving version after the release.

    ``$stable`` selects the serving version; ``$window`` becomes the release's duration
    (e.g. ``95s``). A figure without a query, or without data, is reported as "no data".
    """

    availability: str | None = None
    error_rate: str | None = None
    latency_p50_s: str | None = None
    latency_p95_s: str | None = None
    latency_p99_s: str | None = None
    throughput_rps: str | None = None

    @field_validator("*")
    @classmethod
    def _selects_stable(cls, value: str | None) -> str | None:
        if value is not None and "$stable" not in value:
            raise ValueError("a monitoring query must select the serving version with $stable")
        return value

    def queries(self) -> dict[str, str]:
        return {name: query for name, query in self.model_dump().items() if query}


class Analysis(StrictModel):
    prometheus_conn_id: str = "prometheus_default"
    metrics: list[Metric] = Field(min_length=1)
    monitoring: Monitoring = Field(default_factory=Monitoring)

    @field_validator("metrics")
    @classmethod
    def _unique_names(cls, metrics: list[Metric]) -> list[Metric]:
        seen: set[str] = set()
        for i, metric in enumerate(metrics):
            if metric.name in seen:
                raise FieldProblem((i, "name"), f"metric names must be unique; {metric.name!r} is repeated")
            seen.add(metric.name)
        return metrics


class SlackNotification(StrictModel):
    channel: Annotated[str, Field(pattern=r"^[#@]?[a-z0-9][a-z0-9._-]*$")]
    connection_id: str = "slack_default"


class ServiceNotifications(StrictModel):
    slack: SlackNotification | None = None


class ServiceSpec(StrictModel):
    """One deployable service (include/services/<name>.yaml)."""

    name: DnsName
    description: str = ""
    owners: list[str] = Field(min_length=1)
    platform: PlatformSpec
    image: Image
    strategy: Strategy = "canary"
    canary: CanaryStrategy | None = Field(default=None, validate_default=True)
    bluegreen: BlueGreenStrategy | None = Field(default=None, validate_default=True)
    rolling: RollingStrategy | None = Field(default=None, validate_default=True)
    smoke: list[SmokeCheck] = Field(default_factory=list)
    preflight: Preflight = Field(default_factory=Preflight)
    analysis: Analysis
    notifications: ServiceNotifications = Field(default_factory=ServiceNotifications)

    def instances(self) -> int | None:
        """Instances per version when the spec says (the sandbox); None: the platform's current count."""
        return getattr(self.platform, "instances", None)

    def strategies(self) -> list[str]:
        """The strategies this service can be released with: those whose section is given."""
        return [name for name in ("canary", "bluegreen", "rolling") if getattr(self, name) is not None]

    def bakes(self) -> list[timedelta]:
        """Every bake window of every strategy the service declares."""
        windows = [step.bake for step in self.canary.steps] if self.canary else []
        if self.bluegreen:
            windows += [self.bluegreen.pre_promotion_bake, self.bluegreen.post_promotion_bake]
        if self.rolling:
            windows.append(self.rolling.bake)
        return windows

    @field_validator("analysis", mode="after")
    @classmethod
    def _measured_within_every_bake(cls, value: Analysis, info: ValidationInfo) -> Analysis:
        bakes = [step.bake for step in info.data["canary"].steps] if info.data.get("canary") else []
        if info.data.get("bluegreen"):
            bakes += [info.data["bluegreen"].pre_promotion_bake, info.data["bluegreen"].post_promotion_bake]
        if info.data.get("rolling"):
            bakes.append(info.data["rolling"].bake)
        if not bakes:
            return value
        shortest = min(bakes)
        for i, metric in enumerate(value.metrics):
            if metric.initial_delay is not None and metric.initial_delay >= shortest:
                raise FieldProblem(
                    ("metrics", i, "initial_delay"),
                    f"must be shorter than the shortest bake ({shortest.total_seconds():g}s), "
                    "or the metric is never measured",
                )
        return value

    @field_validator("bluegreen", mode="after")
    @classmethod
    def _preview_share_only_where_load_is_made(cls, value: Any, info: ValidationInfo) -> Any:
        """``preview_share`` splits the sandbox's synthetic load; elsewhere it would be ignored."""
        platform = info.data.get("platform")
        # a spec's JSON (triggers rebuild it) carries the default: only another value is refused
        default = type(value).model_fields["preview_share"].default if value is not None else None
        set_here = value is not None and value.preview_share != default
        if set_here and platform is not None and platform.kind != "sandbox":
            raise FieldProblem(
                ("preview_share",),
                f"is the share of the sandbox's synthetic load; on {platform.kind} the preview "
                "Service takes what its clients send it: remove it",
            )
        return value

    @field_validator("rolling", mode="after")
    @classmethod
    def _rolling_knows_its_instances(cls, value: object, info: ValidationInfo) -> object:
        platform = info.data.get("platform")
        if value is not None and platform is not None and getattr(platform, "instances", None) is None:
            if "replicas" in type(platform).model_fields:
                raise ValueError(
                    "rolling batches are planned when the DAG is built: set platform.replicas to the "
                    f"{platform.kind} Deployment's spec.replicas"
                )
            raise ValueError(
                f"rolling batches need the instance count in the spec; platform kind {platform.kind!r} "
                "has none in this version of opsdag"
            )
        return value

    @field_validator("canary", "bluegreen", "rolling", mode="after")
    @classmethod
    def _default_strategy_has_its_section(cls, value: object, info: ValidationInfo) -> object:
        """The default strategy must be described: a release without its stages would have no gate."""
        if value is None and info.data.get("strategy") == info.field_name:
            raise ValueError(
                f"the {info.field_name} strategy (the default) needs {_SECTION_HINT[info.field_name]}"
            )
        return value


__all__ = [
    "Analysis",
    "BackupFreshness",
    "BlueGreenStrategy",
    "CanaryStep",
    "CanaryStrategy",
    "DependencyCheck",
    "GatewayApiRouterSpec",
    "HaproxyRouterSpec",
    "Image",
    "ImageBuild",
    "KanikoBuildSpec",
    "KubernetesPlatformSpec",
    "Metric",
    "Monitoring",
    "NginxRouterSpec",
    "PlatformSpec",
    "Preflight",
    "ReplicaRatioRouterSpec",
    "RollingStrategy",
    "SandboxPlatformSpec",
    "ServiceNotifications",
    "ServiceSpec",
    "SmokeCheck",
]

"""The service spec: where a service runs, how it is released and how a release is judged."""

from __future__ import annotations

import re
from datetime import timedelta
from itertools import pairwise
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from opsdag.spec.common import DnsName, Duration, FieldProblem, StrictModel

Strategy = Literal["canary", "bluegreen", "rolling"]
_PLACEHOLDER = re.compile(r"\$(canary|stable)\b")
_REPOSITORY = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$")


class SandboxPlatformSpec(StrictModel):
    """The embedded demo platform: local processes behind HAProxy."""

    kind: Literal["sandbox"]
    instances: int = Field(default=2, ge=1, le=8, description="processes per version")


class ReplicaRatioRouter(StrictModel):
    """Traffic follows the ratio of canary to stable replicas (no traffic manager)."""

    kind: Literal["replica-ratio"]
    replicas: int = Field(default=10, ge=1, description="total replicas shared by stable and canary")


class NginxRouter(StrictModel):
    """NGINX ingress canary annotations on a copy of the service's Ingress."""

    kind: Literal["nginx"]
    ingress: DnsName


class GatewayApiRouter(StrictModel):
    """Gateway API HTTPRoute backend weights."""

    kind: Literal["gateway-api"]
    http_route: DnsName


Router = Annotated[ReplicaRatioRouter | NginxRouter | GatewayApiRouter, Field(discriminator="kind")]


class KubernetesPlatformSpec(StrictModel):
    """Deployments in a namespace, reached through an Airflow Kubernetes connection."""

    kind: Literal["kubernetes"]
    namespace: DnsName
    deployment: DnsName
    container: DnsName | None = None
    connection_id: str = "kubernetes_default"
    router: Router = Field(default_factory=lambda: ReplicaRatioRouter(kind="replica-ratio"))


PlatformSpec = Annotated[SandboxPlatformSpec | KubernetesPlatformSpec, Field(discriminator="kind")]


class ImageBuild(StrictModel):
    """Where the image is built from when a release asks for ``build``."""

    context: str
    dockerfile: str = "Dockerfile"
    builder: Literal["docker", "kaniko"] = "docker"


class Image(StrictModel):
    repository: str
    build: ImageBuild | None = None

    @field_validator("repository")
    @classmethod
    def _repository_shape(cls, value: str) -> str:
        if ":" in value.rsplit("/", 1)[-1] or "@" in value:
            raise ValueError(f"{value!r} must be a repository without tag or digest")
        if not _REPOSITORY.match(value):
            raise ValueError(f"{value!r} is not an image repository like registry.example.com/team/app")
        return value


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
    analysis: Analysis
    notifications: ServiceNotifications = Field(default_factory=ServiceNotifications)

    @field_validator("analysis", mode="after")
    @classmethod
    def _measured_within_every_bake(cls, value: Analysis, info: ValidationInfo) -> Analysis:
        canary = info.data.get("canary")
        if canary is None:
            return value
        shortest = min(step.bake for step in canary.steps)
        for i, metric in enumerate(value.metrics):
            if metric.initial_delay is not None and metric.initial_delay >= shortest:
                raise FieldProblem(
                    ("metrics", i, "initial_delay"),
                    f"must be shorter than the shortest bake ({shortest.total_seconds():g}s), "
                    "or the metric is never measured",
                )
        return value

    @field_validator("canary", mode="after")
    @classmethod
    def _canary_has_steps(cls, value: CanaryStrategy | None, info: ValidationInfo) -> CanaryStrategy | None:
        if value is None and info.data.get("strategy") == "canary":
            raise ValueError("the canary strategy (the default) needs canary.steps")
        return value

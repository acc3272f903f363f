"""The runbook spec: which alerts start it, what it does, and the guards around it.

Steps come from a catalogue; each action declares its arguments, the kind of step it is
in an incident (diagnostics, assess, mitigate, verify, escalate) and whether it changes
anything (destructive), so guards can ask a person before a change at 3 a.m.

Every action the spec accepts is performed by the runbook DAG. An action the catalogue
describes but the engine cannot perform yet (``NOT_PERFORMED``: none today) is refused
when the spec loads, naming the step, rather than accepted and ignored.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from opsdag.spec.common import DnsName, Duration, FieldProblem, StrictModel
from opsdag.spec.service import SlackNotification

StepKind = Literal["diagnostics", "assess", "mitigate", "verify", "escalate"]


class _Step(StrictModel):
    destructive: ClassVar[bool] = False
    kind: ClassVar[StepKind] = "assess"
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")] | None = None

    @property
    def step_kind(self) -> StepKind:
        return self.kind


class CheckMetric(_Step):
    """Read a PromQL value and compare it with its bounds.

    ``check: assess`` (default): confirm the alert still holds; a value not above/below
    its bounds (or no data) stops the runbook, the steps after it are skipped.
    ``check: verify``: wait, up to ``timeout``, for the value to be within its bounds
    (e.g. back ``below`` a threshold); reading every ``interval``; not reached: the step fails.
    """

    action: Literal["check_metric"]
    query: str = Field(min_length=1)
    above: float | None = None
    below: float | None = None
    check: Literal["assess", "verify"] = "assess"
    timeout: Duration | None = None
    interval: Duration = timedelta(seconds=10)
    prometheus_conn_id: str = "prometheus_default"

    @property
    def step_kind(self) -> StepKind:
        return self.check

    @model_validator(mode="after")
    def _has_a_bound(self) -> CheckMetric:
        if self.above is None and self.below is None:
            raise ValueError("give the bound that confirms the alert: above, below or both")
        if self.check == "assess" and self.timeout is not None:
            raise FieldProblem(("timeout",), "only a verify check waits; remove timeout or set check: verify")
        return self

    @property
    def wait_for(self) -> timedelta:
        """How long a verify check waits for the value to come within its bounds (default 5 min)."""
        return self.timeout or timedelta(minutes=5)


class Notify(_Step):
    """Post ``message`` to the runbook's Slack channel (``notifications.slack``; else slack_default)."""

    kind: ClassVar[StepKind] = "escalate"
    action: Literal["notify"]
    message: str = Field(min_length=1)


class _DatabaseTarget(_Step):
    """A PostgreSQL server: a database spec's name (its connection) or an Airflow connection id."""

    database: DnsName | None = Field(default=None, description="include/databases/<name>.yaml")
    connection_id: str | None = Field(
        default=None, min_length=1, description="an Airflow postgres connection"
    )

    @model_validator(mode="after")
    def _one_target(self) -> _DatabaseTarget:
        if (self.database is None) == (self.connection_id is None):
            raise ValueError(
                "name the server with exactly one of database (a database spec) or connection_id"
            )
        return self


class PgConnections(_DatabaseTarget):
    """Diagnostics: the server's client connections by state, per database and user."""

    kind: ClassVar[StepKind] = "diagnostics"
    action: Literal["pg_connections"]


class TerminateIdleConnections(_DatabaseTarget):
    """End the client connections of the connected database idle for longer than ``older_than``."""

    destructive: ClassVar[bool] = True
    kind: ClassVar[StepKind] = "mitigate"
    action: Literal["terminate_idle_connections"]
    older_than: Duration
    user: Annotated[str, Field(min_length=1)] | None = None
    idle_in_transaction: bool = False


class _ServiceStep(_Step):
    """A step that acts on a service (``include/services/<service>.yaml``) through its platform."""

    destructive: ClassVar[bool] = True
    kind: ClassVar[StepKind] = "mitigate"
    service: DnsName


class ServiceStatus(_Step):
    """Diagnostics: what the service's platform runs per track, the traffic split in force, and its
    last ``releases`` releases (from their reports). Changes nothing."""

    kind: ClassVar[StepKind] = "diagnostics"
    action: Literal["service_status"]
    service: DnsName
    releases: int = Field(default=3, ge=0, le=20)
    log_lines: int = Field(
        default=0, ge=0, le=200, description="the last lines of each stable instance's log (0: none)"
    )


class MetricSnapshot(_Step):
    """Diagnostics: each named PromQL query read once, for the record (no data is recorded as such)."""

    kind: ClassVar[StepKind] = "diagnostics"
    action: Literal["metric_snapshot"]
    queries: dict[
        Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")], Annotated[str, Field(min_length=1)]
    ] = Field(min_length=1)
    prometheus_conn_id: str = "prometheus_default"


FigureName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]


class SeverityThreshold(StrictModel):
    """``level`` applies when any figure in ``at_least`` is at least its limit."""

    level: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]
    at_least: dict[FigureName, float] = Field(min_length=1)


class Assess(_Step):
    """Assess: severity and blast radius from metrics, recorded for the postmortem. Changes nothing.

    Each named PromQL query (e.g. the share of requests failing, the share of instances
    down) is read once; the severity is the first of ``severity`` (ordered from the worst)
    that any of its figures reaches, else ``otherwise``.
    """

    action: Literal["assess"]
    queries: dict[FigureName, Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    severity: list[SeverityThreshold] = Field(min_length=1)
    otherwise: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")] = "minor"
    prometheus_conn_id: str = "prometheus_default"

    @model_validator(mode="after")
    def _thresholds_name_queries(self) -> Assess:
        for i, threshold in enumerate(self.severity):
            for name in threshold.at_least:
                if name not in self.queries:
                    raise FieldProblem(
                        ("severity", i, "at_least", name),
                        f"no query named {name!r}; name one of: {', '.join(self.queries)}",
                    )
        return self


class RollbackRelease(_ServiceStep):
    """Undo the service's last release when it is younger than ``max_age``.

    The last release is the newest ``release__<service>`` run whose report says
    ``promoted``; its ``previous_image`` is put back as the stable version with all the
    traffic (started, ready, switched, promoted), then read back from the platform. None,
    or older than ``max_age``, or no longer what serves: nothing is changed, the runbook
    stops there and says why (an ``escalate`` step after it calls people).
    """

    action: Literal["rollback_release"]
    max_age: Duration = Field(description="a release older than this is not rolled back")
    ready_timeout: Duration = Field(
        default=timedelta(seconds=60), description="how long the previous version may take to be ready"
    )


class RestartInstances(_ServiceStep):
    """Restart the service's stable instances that do not answer, then wait for them to answer again."""

    action: Literal["restart_instances"]
    track: Literal["stable"] = "stable"
    timeout: Duration = Field(
        default=timedelta(seconds=60), description="how long the restarted instances may take to answer"
    )


class ScaleService(_ServiceStep):
    """Set the number of the service's stable instances (scale out under load); all must be ready."""

    action: Literal["scale"]
    replicas: int = Field(ge=1, le=100, description="stable instances wanted (the stable never goes below 1)")
    timeout: Duration = Field(
        default=timedelta(seconds=60), description="how long the instances may take to be ready"
    )


class DrainCanary(_ServiceStep):
    """Take the service's canary out of traffic (weight 0) and stop it, then read both back.

    Through the platform's router and driver, as a release's abort: ``set_weight(0)``,
    ``remove(CANARY)``, then the router must send the canary nothing, no canary may run and
    the stable track must be healthy within ``timeout``. Nothing to drain: done, nothing changed.
    One actor per service: while a release of the service is queued or running, that release
    holds its canary (and its own gates abort it), so the step refuses, unchanged, like every
    mitigation; it drains a canary nobody acts on (e.g. left by a release that died).
    """

    action: Literal["drain_canary"]
    timeout: Duration = Field(
        default=timedelta(seconds=60), description="how long the drain may take to be read back"
    )


class HealthGate(_Step):
    """Verify with a health gate, as in releases: the service's ``analysis.metrics`` on its stable track.

    Each metric's query is read with ``$canary``/``$stable`` selecting the stable track and
    judged by the release analysis code against its absolute bounds (``max``/``min``; a
    ratio to stable has nothing to compare with, so a ratio-only metric is left out and
    named). Every ``interval`` a round of measurements; the step is done at the first round
    where every metric passes (no data never passes), failed when ``timeout`` passes first
    or a query cannot be judged. ``metrics``: the names to judge (default: every metric with
    max or min). In a dry run, one round, for the report.
    """

    kind: ClassVar[StepKind] = "verify"
    action: Literal["health_gate"]
    service: DnsName
    metrics: list[Annotated[str, Field(min_length=1)]] | None = Field(default=None, min_length=1)
    timeout: Duration = Field(
        default=timedelta(minutes=3), description="how long to wait for a passing round"
    )
    interval: Duration = Field(default=timedelta(seconds=5), description="between two rounds")


class Escalate(_Step):
    """Call people when the runbook did not restore the service; else nothing (recorded as skipped).

    Runs whatever happened before it (trigger rule ``all_done``). Escalates when an earlier
    step failed, a mitigation refused to act (another actor, no recent release), or a
    verify check did not see the recovery: posts ``message`` with ``mentions`` to the
    runbook's Slack channel and asks a person to choose one of ``options`` (Airflow's
    Human-in-the-loop; no answer within ``timeout``: the first option).
    """

    kind: ClassVar[StepKind] = "escalate"
    action: Literal["escalate"]
    message: str = Field(min_length=1)
    mentions: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="Slack mentions: <@U123>, <!subteam^S123>, <!here>"
    )
    options: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=lambda: ["Acknowledged", "Taking over"], min_length=1
    )
    timeout: Duration = Field(default=timedelta(minutes=30))


class Wait(_Step):
    action: Literal["wait"]
    duration: Duration


Step = Annotated[
    CheckMetric
    | Notify
    | Escalate
    | ServiceStatus
    | MetricSnapshot
    | Assess
    | PgConnections
    | TerminateIdleConnections
    | RollbackRelease
    | RestartInstances
    | ScaleService
    | DrainCanary
    | HealthGate
    | Wait,
    Field(discriminator="action"),
]

# Every action of the catalogue, in the order the errors list them.
ACTIONS = tuple(
    typing.get_args(m.model_fields["action"].annotation)[0] for m in typing.get_args(Step)[0].__args__
)
# Described by the catalogue, not performed by the runbook DAG yet: a spec using one is refused.
# None today: every action maps to an operator in factory/runbook_dag.py's STEP_OPERATORS.
NOT_PERFORMED: tuple[str, ...] = ()


def step_id(index: int, step: _Step) -> str:
    """The step's task id: its name, or ``<n>-<action>`` (1-based)."""
    return step.name or f"{index + 1}-{step.action}"


class Guards(StrictModel):
    max_runs_per_hour: int = Field(default=3, ge=1)
    dry_run: bool = Field(default=True, description="plan and report only unless a run says otherwise")
    approval_for_destructive: bool = True
    approval_timeout: Duration = Field(
        default=timedelta(minutes=30), description="unanswered this long: rejected, the step is skipped"
    )


class RunbookNotifications(StrictModel):
    slack: SlackNotification | None = None


REGEX_PREFIX = "=~"


def label_matches(value: str | None, wanted: str) -> bool:
    """Does a label's value match ``wanted``: equal to it, or, written ``=~<regex>``, matched
    by the regex in full (anchored, as Prometheus's ``=~``). A missing label is ``""``, as in
    Prometheus: ``service: ""`` matches an alert without the label."""
    value = value or ""
    if wanted.startswith(REGEX_PREFIX):
        return re.fullmatch(wanted[len(REGEX_PREFIX) :], value) is not None
    return value == wanted


class AlertMatch(StrictModel):
    """An alert that starts the runbook: its ``alertname``, and labels it must carry.

    In the spec an entry is either the alert's name (any labels) or
    ``{name: <alertname>, matchers: {<label>: <value>, ...}}``: every matcher must hold,
    a value is compared for equality, or, written ``"=~<regex>"``, matched in full by the regex.
    """

    name: Annotated[str, Field(min_length=1)]
    matchers: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = Field(
        default_factory=dict
    )

    @field_validator("matchers")
    @classmethod
    def _regexes_compile(cls, matchers: dict[str, str]) -> dict[str, str]:
        for label, wanted in matchers.items():
            if label == "alertname":
                raise FieldProblem((label,), "the alert's name is the entry's name; remove this matcher")
            if wanted.startswith(REGEX_PREFIX):
                try:
                    re.compile(wanted[len(REGEX_PREFIX) :])
                except re.error as exc:
                    raise FieldProblem((label,), f"not a regular expression after =~: {exc}") from None
        return matchers

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        return name == self.name and all(
            label_matches(labels.get(label), wanted) for label, wanted in self.matchers.items()
        )

    def __str__(self) -> str:
        if not self.matchers:
            return self.name
        inner = ", ".join(
            f'{label}=~"{w[len(REGEX_PREFIX) :]}"' if w.startswith(REGEX_PREFIX) else f'{label}="{w}"'
            for label, w in self.matchers.items()
        )
        return f"{self.name}{{{inner}}}"


def _alert_entry(value: object) -> object:
    """A plain name in the spec is an entry without matchers (an empty one is refused here,
    so the error names the entry, not a ``name`` key the spec does not have)."""
    if isinstance(value, str):
        if not value.strip():
            raise PydanticCustomError(
                "string_too_short", "String should have at least 1 character", {"min_length": 1}
            )
        return {"name": value}
    return value


def alert_matches(entries: Iterable[AlertMatch | str], name: str, labels: Mapping[str, str]) -> bool:
    """Does any entry of a runbook's ``alerts`` take the alert ``name`` with ``labels``?"""
    return any(entry == name if isinstance(entry, str) else entry.matches(name, labels) for entry in entries)


class PostmortemSettings(StrictModel):
    """``template``: the Jinja2 template of the Markdown postmortem, a path relative to ``include/``
    (default: opsdag's own, ``plugins/opsdag/runbooks/templates/postmortem.md.j2``). It is read
    when the postmortem is written: a missing or broken one fails the postmortem task naming
    the file, after the postmortem was written with the default template."""

    template: Annotated[str, Field(min_length=1)] | None = None

    @field_validator("template")
    @classmethod
    def _relative_inside(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith("/") or "\\" in value or "\x00" in value:
            raise ValueError(f"{value!r} must be a path relative to include/ with '/' separators")
        if ".." in value.split("/"):
            raise ValueError(f"{value!r} must stay inside include/ (no '..')")
        return value


class RunbookSpec(StrictModel):
    """One runbook (include/runbooks/<name>.yaml)."""

    name: DnsName
    description: str = ""
    owners: list[str] = Field(default_factory=list)
    alerts: list[Annotated[AlertMatch, BeforeValidator(_alert_entry)]] = Field(min_length=1)
    steps: list[Step] = Field(min_length=1)
    guards: Guards = Field(default_factory=Guards)
    notifications: RunbookNotifications = Field(default_factory=RunbookNotifications)
    postmortem: PostmortemSettings = Field(default_factory=PostmortemSettings)

    @field_validator("alerts")
    @classmethod
    def _unique_alerts(cls, alerts: list[AlertMatch]) -> list[AlertMatch]:
        for i, alert in enumerate(alerts):
            if alert in alerts[:i]:
                raise FieldProblem((i,), f"the alert {str(alert)!r} is listed twice")
        return alerts

    def matches_alert(self, name: str, labels: Mapping[str, str]) -> bool:
        """Does an alert ``name`` with ``labels`` start this runbook (any entry of ``alerts``)?"""
        return alert_matches(self.alerts, name, labels)

    def alert_names(self) -> list[str]:
        """The alert names that can start the runbook, each once, in the spec's order."""
        return list(dict.fromkeys(a.name for a in self.alerts))

    @field_validator("steps")
    @classmethod
    def _unique_step_names(cls, steps: list[_Step]) -> list[_Step]:
        """Step ids become task ids: two equal ids would break the DAG."""
        seen: set[str] = set()
        for i, step in enumerate(steps):
            sid = step_id(i, step)
            if sid in seen:
                raise FieldProblem((i, "name"), f"step names must be unique; {sid!r} is repeated")
            seen.add(sid)
        return steps

    @field_validator("steps")
    @classmethod
    def _performed(cls, steps: list[_Step]) -> list[_Step]:
        """Refuse what the runbook DAG cannot perform yet, rather than accept and ignore it."""
        for i, step in enumerate(steps):
            if step.action in NOT_PERFORMED:
                raise FieldProblem(
                    (i, "action"),
                    f"step {step_id(i, step)!r}: {step.action} is not performed by the runbook DAG yet; "
                    f"remove the step (supported: {', '.join(a for a in ACTIONS if a not in NOT_PERFORMED)})",
                )
        return steps

    def step_ids(self) -> list[str]:
        return [step_id(i, step) for i, step in enumerate(self.steps)]

    def plan(self, *, dry_run: bool) -> list[dict[str, object]]:
        """The steps a run would take, each marked destructive or not, for the report and the guards."""
        return [
            {
                "step": step_id(i, step),
                "action": step.action,
                "kind": step.step_kind,
                "destructive": step.destructive,
                "needs_approval": step.destructive and self.guards.approval_for_destructive,
                "dry_run": dry_run,
            }
            for i, step in enumerate(self.steps)
        ]

"""The release record: everything a release run did, as one typed, JSON-safe model.

The report task builds it (:mod:`opsdag.reports.release_facts`) from the XComs of its
run; the report (Markdown and JSON), the DAG run's note and the final Slack message are
all made from it, so they always agree. The report's JSON is the record, with its
``format`` header and its summary: :meth:`ReleaseRecord.from_dict` reads it back.

The record is strict where a mistake would mislead a reader: an unknown key, an unknown
``status``, stage status or metric phase, a time that is not ISO 8601 or a figure that
is not a number is refused with ``field: problem`` (:class:`RecordError`), because a
report that guessed the outcome would be worse than none. A figure may be null: **null
means no data**, and the report shows it as "no data", never as 0 (NaN counts as null;
a non-finite figure is written as its text, ``"inf"``). Per-metric results are the
gate's own :class:`~opsdag.analysis.summary.MetricSummary`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator

from opsdag.analysis.summary import Figure, MetricSummary
from opsdag.reports.store import report_format

FORMAT = report_format("release", 2)  # /2: metrics are MetricSummary; the failed step is recorded
Status = Literal["promoted", "rolled_back", "refused", "failed", "planned"]
StageStatus = Literal["passed", "failed", "skipped", "not_run", "running"]


class RecordError(ValueError):
    """A release record that cannot be read: the message says ``field: problem``."""


def read_time(value: Any) -> str | None:
    """An ISO 8601 string (checked), or None; a datetime or epoch seconds are converted."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).isoformat()
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 time, got {value!r}")
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 time") from None
    return value


def seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from one ISO 8601 time to another, or None when either is missing."""
    if not start or not end:
        return None
    a = datetime.fromisoformat(start.replace("Z", "+00:00"))
    b = datetime.fromisoformat(end.replace("Z", "+00:00"))
    if (a.tzinfo is None) != (b.tzinfo is None):
        return None
    return (b - a).total_seconds()


Time = Annotated[str | None, BeforeValidator(read_time)]
Text = Annotated[str, BeforeValidator(lambda value: "" if value is None else value)]


class _Part(BaseModel):
    """A part of the record: frozen, and an unknown key is an error, not silently dropped."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class PreflightCheck(_Part):
    """One pre-deployment check: ``ok`` None means it did not run."""

    name: str
    ok: bool | None = None
    detail: Text = ""


class PreflightChecks(_Part):
    checks: tuple[PreflightCheck, ...] = ()


class BuildRecord(_Part):
    """The image the run built (``build: true``): what the release deployed, by digest."""

    builder: str
    version: Text = ""
    image: Text = ""
    digest: Text = ""
    pushed_to: Text = ""
    labels: dict[str, str] = {}
    build_seconds: Figure = None
    cached: bool = False
    detail: Text = ""


class StageRecord(_Part):
    """One step of the rollout: ``weight`` % of traffic on the new version, judged for ``bake_s``."""

    name: str
    status: StageStatus = "not_run"
    weight: int | None = None
    bake_s: Figure = None
    reason: Text = ""
    started_at: Time = None
    finished_at: Time = None
    metrics: tuple[MetricSummary, ...] = ()

    @property
    def ran(self) -> bool:
        """True when the stage sent traffic to the new version (it passed, failed or was interrupted)."""
        return self.status in ("passed", "failed", "running")

    @property
    def label(self) -> str:
        """``stage_10 (10 %)``."""
        return f"{self.name} ({self.weight} %)" if self.weight is not None else self.name


class PostPromotionResult(_Part):
    """The validation after promotion: ``ok`` None means it did not run."""

    ok: bool | None = None
    detail: Text = ""


class MonitoringFigures(_Part):
    """The service's figures over the release (stable and new together); None is no data.

    ``availability`` and ``error_rate`` are ratios (0..1), latencies in seconds,
    ``throughput_rps`` in requests per second, ``window_s`` the span they cover.
    """

    availability: Figure = None
    latency_p50_s: Figure = None
    latency_p95_s: Figure = None
    latency_p99_s: Figure = None
    error_rate: Figure = None
    throughput_rps: Figure = None
    window_s: Figure = None


class RollbackRecord(_Part):
    """What was done to put the stable version back, and why."""

    performed: bool
    reason: Text = ""
    started_at: Time = None
    finished_at: Time = None
    duration_s: Figure = None

    @model_validator(mode="after")
    def _duration_from_times(self) -> RollbackRecord:
        if self.duration_s is None and self.started_at and self.finished_at:
            return self.model_copy(update={"duration_s": seconds_between(self.started_at, self.finished_at)})
        return self


class FailedStep(_Part):
    """The first task of the run that failed (in run order), and its own error."""

    task_id: str
    error: Text = ""


class ReleaseRecord(_Part):
    """One release run, from request to outcome."""

    service: str
    status: Status
    image: Text = ""
    previous_image: str | None = None
    strategy: Text = ""
    reason: Text = ""
    dry_run: bool = False
    dag_id: Text = ""
    run_id: Text = ""
    started_at: Time = None
    finished_at: Time = None
    duration_s: Figure = None
    prometheus_conn_id: str | None = None
    build: BuildRecord | None = None
    preflight: PreflightChecks = PreflightChecks()
    stages: tuple[StageRecord, ...] = ()
    post_promotion: PostPromotionResult = PostPromotionResult()
    monitoring: MonitoringFigures = MonitoringFigures()
    rollback: RollbackRecord | None = None
    failure: FailedStep | None = None
    incidents: tuple[str, ...] = ()
    next_actions: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _derived(self) -> ReleaseRecord:
        update: dict[str, Any] = {}
        if not self.dag_id and self.service:
            update["dag_id"] = f"release__{self.service}"
        if self.duration_s is None:
            update["duration_s"] = seconds_between(self.started_at, self.finished_at)
        return self.model_copy(update=update) if update else self

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReleaseRecord:
        """Read a record: as the report task builds it, or as the report's JSON holds it."""
        if not isinstance(data, Mapping):
            raise RecordError(f"record: expected a mapping, got {type(data).__name__}")
        fields = dict(data)
        shown = fields.pop("format", FORMAT)
        if shown != FORMAT:
            raise RecordError(f"format: {shown!r} is not {FORMAT!r}")
        fields.pop("summary", None)  # the report's JSON carries its summary line; it is derived
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            raise RecordError(_first_problem(exc, fields)) from None

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-safe data; ``from_dict(to_dict())`` gives the same record back."""
        return self.model_dump(mode="json")


def as_record(record: ReleaseRecord | Mapping[str, Any]) -> ReleaseRecord:
    """Accept either the typed record or its dict form (as XComs carry it)."""
    return record if isinstance(record, ReleaseRecord) else ReleaseRecord.from_dict(record)


# ---------------------------------------------------------------------------- errors in words


def _first_problem(exc: ValidationError, data: Mapping[str, Any]) -> str:
    """``stages[stage_10].metrics[0][error-rate].last_value: expected a number or null, got 'high'``."""
    error = exc.errors(include_url=False)[0]
    return f"{_where(error['loc'], data)}: {_problem(error)}"


def _where(loc: tuple[Any, ...], data: Any) -> str:
    """The path of a field, naming stages by their name and other list items by index and name."""
    text, node, parent = "", data, ""
    for key in loc:
        if isinstance(key, int):
            item = node[key] if isinstance(node, list | tuple) and key < len(node) else {}
            name = item.get("name", item.get("metric")) if isinstance(item, Mapping) else None
            if parent == "stages" and name:
                text += f"[{name}]"
            else:
                text += f"[{key}]" + (f"[{name}]" if name else "")
            node = item
        else:
            text += f".{key}" if text else str(key)
            node = node.get(key) if isinstance(node, Mapping) else None
            parent = str(key)
    return text or "record"


def _problem(error: Mapping[str, Any]) -> str:
    kind, value = error["type"], error.get("input")
    if kind == "missing":
        return "missing"
    if kind == "extra_forbidden":
        return "not a field of a release record"
    if kind == "literal_error":
        allowed = str(error.get("ctx", {}).get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"{value!r} is not one of {allowed}"
    return str(error["msg"]).removeprefix("Value error, ")

"""The release record: everything a release run did, as one plain, JSON-safe structure.

The release DAG's report task builds it from the XComs of its tasks and hands it, as a
dict, to :func:`ReleaseRecord.from_dict`; the report (Markdown and JSON), the DAG run's
note and the final Slack message are all made from it, so they always agree.

``from_dict`` is lenient where the producers are many and strict where a mistake would
mislead a reader:

- unknown keys are ignored, missing optional keys take their defaults;
- a metric may come in the gate's own shape (:class:`opsdag.analysis.summary.MetricSummary`:
  ``metric``, ``last_baseline``, ``passed``/``failed`` counts, phase ``pass``/``fail``) or in
  the record's (``name``, ``baseline``, ``passes``/``failures``, phase ``passed``/``failed``);
- a number may be a JSON number, a numeric string (``"inf"``, as ``Measurement.to_dict``
  writes non-finite values) or null; NaN counts as null: **null means no data**, and the
  report shows it as "no data", never as 0;
- a stage may be a health gate's ``verdict`` XCom (``gate`` for the name, ``phase``
  pass/fail/error/running for the status);
- times are ISO 8601 strings (a ``datetime`` or epoch seconds are accepted and converted);
- an unknown ``status``, stage status or metric phase is refused with ``field: problem``
  (:class:`RecordError`), because a report that guessed the outcome would be worse than none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

Status = Literal["promoted", "rolled_back", "refused", "failed", "planned"]
StageStatus = Literal["passed", "failed", "skipped", "not_run", "running"]
MetricPhase = Literal["passed", "failed", "inconclusive", "error", "running"]

# The gate (opsdag.analysis) says pass/fail; the record says passed/failed.
_PHASE_ALIASES = {"pass": "passed", "fail": "failed", "successful": "passed"}
_STAGE_ALIASES = {"pass": "passed", "fail": "failed", "not run": "not_run", "pending": "not_run"}
_GATE_PHASES = {"pass": "passed", "fail": "failed", "error": "failed", "running": "running"}


class RecordError(ValueError):
    """A release record that cannot be read: the message says ``field: problem``."""


def _number(value: Any, where: str) -> float | None:
    """A float, or None for no data (null, NaN, empty string)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RecordError(f"{where}: expected a number or null, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RecordError(f"{where}: expected a number or null, got {value!r}") from None
    return None if math.isnan(number) else number


def _count(value: Any, where: str) -> int:
    number = _number(value, where)
    return 0 if number is None else int(number)


def _time(value: Any, where: str) -> str | None:
    """An ISO 8601 string (checked), or None; a datetime or epoch seconds are converted."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).isoformat()
    if not isinstance(value, str):
        raise RecordError(f"{where}: expected an ISO 8601 time, got {value!r}")
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise RecordError(f"{where}: {value!r} is not an ISO 8601 time") from None
    return value


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _flag(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _choice(value: Any, allowed: tuple[str, ...], aliases: Mapping[str, str], where: str) -> Any:
    """``value`` (or its alias) when it is one of ``allowed``; typed Any to fill a Literal field."""
    text = aliases.get(str(value), str(value))
    if text not in allowed:
        raise RecordError(f"{where}: {value!r} is not one of {', '.join(allowed)}")
    return text


def _json_number(value: float | None) -> float | str | None:
    """JSON has no infinity: a non-finite number is written as its text, like the gate does."""
    if value is not None and not math.isfinite(value):
        return str(value)
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


@dataclass(frozen=True)
class Check:
    """One pre-deployment check: ``ok`` None means it did not run."""

    name: str
    ok: bool | None
    detail: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "check") -> Check:
        return cls(
            name=_text(data.get("name")) or "?", ok=_flag(data.get("ok")), detail=_text(data.get("detail"))
        )

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class MetricResult:
    """One metric of one stage's gate: its verdict, the last numbers, the limit and the counts."""

    name: str
    phase: MetricPhase
    last_value: float | None = None
    baseline: float | None = None
    limit: str = ""
    passes: int = 0
    failures: int = 0
    inconclusive: int = 0
    errors: int = 0
    reason: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "metric") -> MetricResult:
        name = _text(data.get("name", data.get("metric")))
        if not name:
            raise RecordError(f"{where}.name: missing")
        where = f"{where}[{name}]"
        return cls(
            name=name,
            phase=_choice(data.get("phase"), get_args(MetricPhase), _PHASE_ALIASES, f"{where}.phase"),
            last_value=_number(data.get("last_value", data.get("value")), f"{where}.last_value"),
            baseline=_number(data.get("baseline", data.get("last_baseline")), f"{where}.baseline"),
            limit=_text(data.get("limit")),
            passes=_count(data.get("passes", data.get("passed")), f"{where}.passes"),
            failures=_count(data.get("failures", data.get("failed")), f"{where}.failures"),
            inconclusive=_count(data.get("inconclusive"), f"{where}.inconclusive"),
            errors=_count(data.get("errors"), f"{where}.errors"),
            reason=_text(data.get("reason")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "phase": self.phase,
            "last_value": _json_number(self.last_value),
            "baseline": _json_number(self.baseline),
            "limit": self.limit,
            "passes": self.passes,
            "failures": self.failures,
            "inconclusive": self.inconclusive,
            "errors": self.errors,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Stage:
    """One step of the rollout: ``weight`` % of traffic on the new version, judged for ``bake_s``."""

    name: str
    status: StageStatus
    weight: int | None = None
    bake_s: float | None = None
    reason: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    metrics: tuple[MetricResult, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "stage") -> Stage:
        name = _text(data.get("name", data.get("gate")))
        if not name:
            raise RecordError(f"{where}.name: missing")
        where = f"stages[{name}]"
        weight = _number(data.get("weight"), f"{where}.weight")
        status = data.get("status")
        if status is None:  # a gate's verdict XCom says phase: pass | fail | error | running
            status = _GATE_PHASES.get(str(data.get("phase")), "not_run")
        return cls(
            name=name,
            status=_choice(status, get_args(StageStatus), _STAGE_ALIASES, f"{where}.status"),
            weight=None if weight is None else int(weight),
            bake_s=_number(data.get("bake_s"), f"{where}.bake_s"),
            reason=_text(data.get("reason")),
            started_at=_time(data.get("started_at"), f"{where}.started_at"),
            finished_at=_time(data.get("finished_at"), f"{where}.finished_at"),
            metrics=tuple(
                MetricResult.from_dict(m, f"{where}.metrics[{i}]")
                for i, m in enumerate(data.get("metrics") or ())
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weight": self.weight,
            "bake_s": _json_number(self.bake_s),
            "status": self.status,
            "reason": self.reason,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "metrics": [m.to_dict() for m in self.metrics],
        }

    @property
    def ran(self) -> bool:
        """True when the stage sent traffic to the new version (it passed, failed or was interrupted)."""
        return self.status in ("passed", "failed", "running")


@dataclass(frozen=True)
class PostPromotion:
    """The validation after promotion: ``ok`` None means it did not run."""

    ok: bool | None = None
    detail: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PostPromotion:
        data = data or {}
        return cls(ok=_flag(data.get("ok")), detail=_text(data.get("detail")))

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class Monitoring:
    """The service's figures over the release (stable and new together); None is no data.

    ``availability`` and ``error_rate`` are ratios (0..1), latencies in seconds,
    ``throughput_rps`` in requests per second, ``window_s`` the span they cover.
    """

    availability: float | None = None
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    latency_p99_s: float | None = None
    error_rate: float | None = None
    throughput_rps: float | None = None
    window_s: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Monitoring:
        data = data or {}
        return cls(
            **{name: _number(data.get(name), f"monitoring.{name}") for name in cls.__dataclass_fields__}
        )

    def to_dict(self) -> dict[str, Any]:
        return {name: _json_number(getattr(self, name)) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class Rollback:
    """What was done to put the stable version back."""

    performed: bool
    reason: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Rollback | None:
        if not data:
            return None
        started = _time(data.get("started_at"), "rollback.started_at")
        finished = _time(data.get("finished_at"), "rollback.finished_at")
        duration = _number(data.get("duration_s"), "rollback.duration_s")
        return cls(
            performed=bool(data.get("performed")),
            reason=_text(data.get("reason")),
            started_at=started,
            finished_at=finished,
            duration_s=duration if duration is not None else seconds_between(started, finished),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "performed": self.performed,
            "reason": self.reason,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": _json_number(self.duration_s),
        }


@dataclass(frozen=True)
class ReleaseRecord:
    """One release run, from request to outcome."""

    service: str
    status: Status
    image: str = ""
    previous_image: str | None = None
    strategy: str = ""
    reason: str = ""
    dry_run: bool = False
    dag_id: str = ""
    run_id: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    preflight: tuple[Check, ...] = ()
    stages: tuple[Stage, ...] = ()
    post_promotion: PostPromotion = field(default_factory=PostPromotion)
    monitoring: Monitoring = field(default_factory=Monitoring)
    rollback: Rollback | None = None
    incidents: tuple[str, ...] = ()
    next_actions: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReleaseRecord:
        """Read a record (as the report task builds it, or as the report's JSON holds it)."""
        if not isinstance(data, Mapping):
            raise RecordError(f"record: expected a mapping, got {type(data).__name__}")
        service = _text(data.get("service"))
        if not service:
            raise RecordError("service: missing")
        started = _time(data.get("started_at"), "started_at")
        finished = _time(data.get("finished_at"), "finished_at")
        duration = _number(data.get("duration_s"), "duration_s")
        preflight = data.get("preflight") or {}
        checks = preflight.get("checks", ()) if isinstance(preflight, Mapping) else preflight
        return cls(
            service=service,
            status=_choice(data.get("status"), get_args(Status), {"rolled back": "rolled_back"}, "status"),
            image=_text(data.get("image")),
            previous_image=_text(data.get("previous_image")) or None,
            strategy=_text(data.get("strategy")),
            reason=_text(data.get("reason")),
            dry_run=bool(data.get("dry_run")),
            dag_id=_text(data.get("dag_id")) or f"release__{service}",
            run_id=_text(data.get("run_id")),
            started_at=started,
            finished_at=finished,
            duration_s=duration if duration is not None else seconds_between(started, finished),
            preflight=tuple(Check.from_dict(c, f"preflight.checks[{i}]") for i, c in enumerate(checks or ())),
            stages=tuple(Stage.from_dict(s, f"stages[{i}]") for i, s in enumerate(data.get("stages") or ())),
            post_promotion=PostPromotion.from_dict(data.get("post_promotion")),
            monitoring=Monitoring.from_dict(data.get("monitoring")),
            rollback=Rollback.from_dict(data.get("rollback")),
            incidents=tuple(_text(i) for i in data.get("incidents") or () if _text(i)),
            next_actions=tuple(_text(a) for a in data.get("next_actions") or () if _text(a)),
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-safe data; ``from_dict(to_dict())`` gives the same record back."""
        return {
            "service": self.service,
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "image": self.image,
            "previous_image": self.previous_image,
            "strategy": self.strategy,
            "reason": self.reason,
            "dry_run": self.dry_run,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": _json_number(self.duration_s),
            "preflight": {"checks": [c.to_dict() for c in self.preflight]},
            "stages": [s.to_dict() for s in self.stages],
            "post_promotion": self.post_promotion.to_dict(),
            "monitoring": self.monitoring.to_dict(),
            "rollback": None if self.rollback is None else self.rollback.to_dict(),
            "incidents": list(self.incidents),
            "next_actions": list(self.next_actions),
        }


def as_record(record: ReleaseRecord | Mapping[str, Any]) -> ReleaseRecord:
    """Accept either the typed record or its dict form (as XComs carry it)."""
    return record if isinstance(record, ReleaseRecord) else ReleaseRecord.from_dict(record)


def as_stage(stage: Stage | Mapping[str, Any]) -> Stage:
    return stage if isinstance(stage, Stage) else Stage.from_dict(stage)


def as_stages(stages: Sequence[Stage | Mapping[str, Any]]) -> tuple[Stage, ...]:
    return tuple(as_stage(s) for s in stages)

"""A gate's measurements folded into one small record per metric: THE per-metric result.

The trigger's event, the gate's XCom, the release record (its stages), the report and
the Slack messages all carry :class:`MetricSummary` instead of every measurement: it
stays small however long the bake window, and still says for each metric its last
value, the stable baseline, the limit and the counts. There is no other per-metric type.

JSON has no infinity: a non-finite figure is written as its text (``"inf"``, as
``Measurement.to_dict`` does) and read back as a float; NaN, like null, is no data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, NonNegativeInt, PlainSerializer, TypeAdapter
from pydantic.dataclasses import dataclass

from opsdag.analysis.judge import Measurement, Phase, describe_limits, metric_phase
from opsdag.format import number
from opsdag.spec.service import Metric


def read_figure(value: Any) -> float | None:
    """A float, or None for no data (null, NaN, empty text); ``"inf"`` is infinity."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"expected a number or null, got {value!r}")
    try:
        figure = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number or null, got {value!r}") from None
    return None if math.isnan(figure) else figure


def write_figure(value: float | None) -> float | str | None:
    """The figure as JSON can hold it: a non-finite number becomes its text."""
    if value is not None and not math.isfinite(value):
        return str(value)
    return value


# A measured number that may be missing: validated by read_figure, serialised by write_figure.
Figure = Annotated[
    float | None, BeforeValidator(read_figure), PlainSerializer(write_figure, when_used="always")
]


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class MetricSummary:
    """One metric of a gate: its phase and reason, last numbers, limit and counts.

    ``phase`` is the judge's (running, pass, fail, error); ``last_value`` and
    ``last_baseline`` are None when there was no data, never 0.
    """

    metric: str
    phase: Phase
    reason: str
    limit: str
    last_value: Figure
    last_baseline: Figure
    passed: NonNegativeInt
    failed: NonNegativeInt
    inconclusive: NonNegativeInt
    errors: NonNegativeInt

    def line(self) -> str:
        """One line for people: ``error-rate fail: last 0.081 (stable 0.004), limit max 0.02; ...``."""
        baseline = f" (stable {number(self.last_baseline)})" if self.last_baseline is not None else ""
        counts = f"{self.passed} pass, {self.failed} fail, {self.inconclusive} inconclusive"
        if self.errors:
            counts += f", {self.errors} error"
        last = f"last {number(self.last_value)}{baseline}"
        return f"{self.metric} {self.phase}: {last}, limit {self.limit}; {counts}"

    @property
    def lacks_data(self) -> bool:
        """It did not pass and nothing was measured against it: no data, not a bad canary.

        True when no measurement failed and none was a query error: the metric failed on
        missing data (inconclusive past its limit, or never measured in the window).
        """
        return self.phase == "fail" and not self.failed and not self.errors

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (a non-finite figure becomes its text, e.g. ``"inf"``)."""
        return _ADAPTER.dump_python(self, mode="json")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricSummary:
        """Read :meth:`to_dict`'s output back; a malformed dict raises pydantic's ValidationError."""
        return _ADAPTER.validate_python(dict(data))


_ADAPTER = TypeAdapter(MetricSummary)


def summarize(
    metrics: Sequence[Metric], measurements: Iterable[Measurement], *, window_ended: bool = False
) -> list[MetricSummary]:
    """One :class:`MetricSummary` per metric, in the spec's order."""
    measurements = list(measurements)
    out = []
    for metric in metrics:
        mine = [m for m in measurements if m.metric == metric.name]
        valued = [m for m in mine if m.value is not None]
        phase, reason = metric_phase(metric, mine, window_ended=window_ended)
        out.append(
            MetricSummary(
                metric=metric.name,
                phase=phase,
                reason=reason,
                limit=describe_limits(metric),
                last_value=valued[-1].value if valued else None,
                last_baseline=next((m.baseline for m in reversed(mine) if m.baseline is not None), None),
                passed=sum(m.phase == "pass" for m in mine),
                failed=sum(m.phase == "fail" for m in mine),
                inconclusive=sum(m.phase == "inconclusive" for m in mine),
                errors=sum(m.phase == "error" for m in mine),
            )
        )
    return out


def summary_text(summaries: Iterable[MetricSummary]) -> str:
    """The summaries as Markdown bullet lines (Slack's mrkdwn reads them too)."""
    return "\n".join(f"- {s.line()}" for s in summaries)

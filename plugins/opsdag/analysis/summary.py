"""A gate's measurements folded into one small record per metric, for XComs, reports and Slack.

The trigger's event, the gate's XCom and the release report all carry this summary
instead of every measurement: it stays small however long the bake window, and still
says for each metric its last value, the stable baseline, the limit and the counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from opsdag.analysis.judge import Measurement, Phase, describe_limits, fmt, metric_phase
from opsdag.spec.service import Metric


@dataclass(frozen=True)
class MetricSummary:
    """One metric of a gate: its phase and reason, last numbers, limit and counts."""

    metric: str
    phase: Phase
    reason: str
    limit: str
    last_value: float | None
    last_baseline: float | None
    passed: int
    failed: int
    inconclusive: int
    errors: int

    def line(self) -> str:
        """One line for people: ``error-rate fail: last 0.081 (stable 0.004), limit max 0.02; ...``."""
        baseline = f" (stable {fmt(self.last_baseline)})" if self.last_baseline is not None else ""
        counts = f"{self.passed} pass, {self.failed} fail, {self.inconclusive} inconclusive"
        if self.errors:
            counts += f", {self.errors} error"
        last = f"last {fmt(self.last_value)}{baseline}"
        return f"{self.metric} {self.phase}: {last}, limit {self.limit}; {counts}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("last_value", "last_baseline"):
            if data[key] is not None and not math.isfinite(data[key]):
                data[key] = str(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricSummary:
        fields = dict(data)
        for key in ("last_value", "last_baseline"):
            if fields.get(key) is not None:
                fields[key] = float(fields[key])
        return cls(**fields)


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

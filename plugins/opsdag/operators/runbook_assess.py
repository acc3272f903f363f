"""``assess``: severity and blast radius from metrics, recorded for the postmortem (changes nothing)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from opsdag.operators.runbook_steps import RunbookStepOperator
from opsdag.runbooks.assess import SeverityLevel, severity


class AssessOperator(RunbookStepOperator):
    """Read the step's named queries once and derive the severity from its thresholds."""

    def perform(self, context: Any, started: datetime) -> tuple[Any, ...]:
        from opsdag.hooks.prometheus import PrometheusHook

        step = self.step
        figures = PrometheusHook(step.prometheus_conn_id).query_figures(step.queries)
        levels = [SeverityLevel(t.level, t.at_least) for t in step.severity]
        level, reason = severity(figures, levels, step.otherwise)
        return "done", f"severity {reason}", {"severity": level, "figures": figures}

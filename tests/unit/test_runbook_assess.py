"""The ``assess`` step: severity and blast radius from metric figures, with the numbers in words."""

from __future__ import annotations

import pytest

from opsdag.runbooks.assess import SeverityLevel, severity
from opsdag.spec.loader import parse_spec
from opsdag.spec.runbook import RunbookSpec

LEVELS = [
    SeverityLevel("critical", {"error-share": 0.05, "down-share": 0.5}),
    SeverityLevel("major", {"error-share": 0.01, "down-share": 0.25}),
]


@pytest.mark.parametrize(
    ("figures", "level", "reason"),
    [
        ({"error-share": 0.12, "down-share": 0.0}, "critical", "critical: error-share 0.12 >= 0.05"),
        ({"error-share": 0.0, "down-share": 0.5}, "critical", "critical: down-share 0.5 >= 0.5"),
        (
            {"error-share": 0.2, "down-share": 1.0},
            "critical",
            "critical: error-share 0.2 >= 0.05, down-share 1 >= 0.5",
        ),
        ({"error-share": 0.02, "down-share": 0.0}, "major", "major: error-share 0.02 >= 0.01"),
        (
            {"error-share": 0.01, "down-share": 0.3},
            "major",
            "major: error-share 0.01 >= 0.01, down-share 0.3 >= 0.25",
        ),
        (
            {"error-share": 0.002, "down-share": 0.0},
            "minor",
            "minor: error-share 0.002 < 0.01, down-share 0 < 0.25",
        ),
        # no data reaches no level, and says so: never read as 0
        ({"error-share": None, "down-share": 0.6}, "critical", "critical: down-share 0.6 >= 0.5"),
        ({"error-share": None}, "minor", "minor: error-share no data, down-share no data"),
    ],
)
def test_the_severity_is_the_worst_level_a_figure_reaches(figures, level, reason) -> None:
    assert severity(figures, LEVELS, "minor") == (level, reason)


STEP = {
    "action": "assess",
    "name": "assess-impact",
    "queries": {"error-share": "sum(rate(a[1m])) / sum(rate(b[1m]))", "down-share": "avg(1 - up)"},
    "severity": [
        {"level": "critical", "at_least": {"error-share": 0.05, "down-share": 0.5}},
        {"level": "major", "at_least": {"error-share": 0.01}},
    ],
}


def load(step: dict) -> tuple[RunbookSpec | None, list[tuple[str, str]]]:
    data = {"name": "errors", "alerts": ["HighErrorRate"], "steps": [step]}
    loaded, errors = parse_spec(RunbookSpec, data, "errors.yaml")
    return loaded, [(e.field, e.problem) for e in errors]


def test_an_assess_step_is_performed_by_the_runbook_dag() -> None:
    from opsdag.factory.runbook_dag import STEP_OPERATORS, runbook_dag
    from opsdag.operators.runbook_assess import AssessOperator
    from opsdag.spec.runbook import ACTIONS

    loaded, problems = load(STEP)
    assert problems == []
    assert set(STEP_OPERATORS) == set(ACTIONS)  # no action accepted and left without a task
    task = runbook_dag(loaded).get_task("assess-impact")
    assert isinstance(task, AssessOperator)


def test_an_assess_step_names_its_figures_and_changes_nothing() -> None:
    loaded, problems = load(STEP)
    assert problems == []
    [step] = loaded.steps
    assert (step.step_kind, step.destructive, step.otherwise) == ("assess", False, "minor")
    assert [t.level for t in step.severity] == ["critical", "major"]
    assert loaded.plan(dry_run=True)[0]["needs_approval"] is False


def test_a_threshold_on_a_figure_no_query_gives_is_refused_naming_it() -> None:
    bad = {**STEP, "severity": [{"level": "critical", "at_least": {"errors": 0.05}}]}
    _, problems = load(bad)
    assert problems == [
        (
            "steps[0].severity[0].at_least.errors",
            "no query named 'errors'; name one of: error-share, down-share",
        )
    ]


def test_the_operator_records_the_severity_and_its_figures(monkeypatch) -> None:
    from opsdag.hooks.prometheus import PrometheusHook
    from opsdag.operators.runbook_assess import AssessOperator
    from opsdag.runbooks.engine import now

    monkeypatch.setattr(
        PrometheusHook, "query_figures", lambda self, queries: {"error-share": 0.03, "down-share": None}
    )
    loaded, _ = load(STEP)
    operator = AssessOperator(runbook=loaded, index=0)
    result, detail, data = operator.perform({"params": {}}, now())
    assert (result, detail) == ("done", "severity major: error-share 0.03 >= 0.01")
    assert data == {"severity": "major", "figures": {"error-share": 0.03, "down-share": None}}

"""A runbook's own postmortem template (``postmortem.template``, relative to include/)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from opsdag.runbooks.postmortem import write_postmortem_with
from opsdag.runbooks.postmortem_record import IncidentRecord
from opsdag.spec.loader import parse_spec
from opsdag.spec.runbook import RunbookSpec

START = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)
RUNBOOK = {"name": "r", "alerts": ["ServiceDown"], "steps": [{"action": "notify", "message": "hi"}]}


def record() -> IncidentRecord:
    return IncidentRecord.model_validate(
        {
            "runbook": "service-down",
            "run_id": "alert__0123abcd__20261130T040000.000000Z",
            "alert": {
                "name": "ServiceDown",
                "status": "firing",
                "labels": {"alertname": "ServiceDown", "service": "demo-api"},
                "annotations": {},
                "startsAt": START.isoformat(),
                "fingerprint": "0123abcd",
            },
            "dry_run": False,
            "actions": [],
        }
    )


def test_the_template_is_a_path_inside_include() -> None:
    spec = RunbookSpec.model_validate(
        {**RUNBOOK, "postmortem": {"template": "runbooks/templates/ours.md.j2"}}
    )
    assert spec.postmortem.template == "runbooks/templates/ours.md.j2"
    assert RunbookSpec.model_validate(RUNBOOK).postmortem.template is None
    for bad, words in [("/etc/passwd", "relative to include/"), ("../secrets.j2", "no '..'")]:
        _, errors = parse_spec(RunbookSpec, {**RUNBOOK, "postmortem": {"template": bad}}, "r.yaml")
        [(where, problem)] = [(e.field, e.problem) for e in errors]
        assert where == "postmortem.template" and words in problem, problem
    _, errors = parse_spec(RunbookSpec, {**RUNBOOK, "postmortem": {"templat": "x"}}, "r.yaml")
    assert [e.field for e in errors] == ["postmortem.templat"]


def test_the_teams_template_renders_the_postmortem(tmp_path: Path) -> None:
    template = tmp_path / "ours.md.j2"
    template.write_text("# {{ record.runbook }}: {{ alert.name }} on {{ alert.labels.service }}\n")
    paths, problem = write_postmortem_with(record(), template, tmp_path / "reports")
    assert problem is None
    assert paths.markdown.read_text().startswith("# service-down: ServiceDown on demo-api")
    assert paths.json.is_file()


@pytest.mark.parametrize(
    ("content", "words"),
    [(None, "no such postmortem template"), ("{% if %}", ":1: ")],
)
def test_a_missing_or_broken_template_is_named_and_the_default_writes_the_postmortem(
    tmp_path: Path, content, words
) -> None:
    template = tmp_path / "ours.md.j2"
    if content is not None:
        template.write_text(content)
    paths, problem = write_postmortem_with(record(), template, tmp_path / "reports")
    assert problem is not None and str(template) in problem and words in problem, problem
    markdown = paths.markdown.read_text()
    assert "ServiceDown" in markdown and "service-down" in markdown  # the default template's postmortem

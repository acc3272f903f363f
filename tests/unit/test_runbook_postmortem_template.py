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


class FakeTI:
    dag_id, run_id = "runbook__r", "manual__1"

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> None:
        return None

    def get_task_states(self, **kwargs) -> dict:
        return {}


def run_postmortem_task(monkeypatch, tmp_path: Path, template: str) -> dict:
    from opsdag.operators.runbook_postmortem import RunbookPostmortemOperator

    monkeypatch.setenv("OPSDAG_INCLUDE_DIR", str(tmp_path / "include"))
    monkeypatch.setenv("OPSDAG_REPORTS_DIR", str(tmp_path / "reports"))
    spec = RunbookSpec.model_validate({**RUNBOOK, "postmortem": {"template": template}})
    task = RunbookPostmortemOperator(task_id="postmortem", runbook=spec)
    context = {"ti": FakeTI(), "params": {"alert": {}, "dry_run": True}, "run_id": "manual__1"}
    return task.execute(context)


def test_the_postmortem_task_reads_the_template_under_include(monkeypatch, tmp_path: Path) -> None:
    (tmp_path / "include" / "runbooks" / "templates").mkdir(parents=True)
    (tmp_path / "include" / "runbooks" / "templates" / "ours.md.j2").write_text(
        "ours: {{ record.runbook }}\n"
    )
    result = run_postmortem_task(monkeypatch, tmp_path, "runbooks/templates/ours.md.j2")
    assert Path(result["markdown"]).read_text() == "ours: r\n"


def test_the_postmortem_task_fails_naming_a_missing_template(monkeypatch, tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException) as failed:
        run_postmortem_task(monkeypatch, tmp_path, "runbooks/templates/gone.md.j2")
    message = str(failed.value)
    assert message.startswith(
        f"postmortem.template: {tmp_path / 'include' / 'runbooks' / 'templates' / 'gone.md.j2'}: "
        "no such postmortem template"
    )
    assert "(written with the default template); postmortem at " in message
    written = list((tmp_path / "reports" / "runbook__r").glob("*.md"))
    assert len(written) == 1 and "r" in written[0].read_text()

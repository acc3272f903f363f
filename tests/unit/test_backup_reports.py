"""The backup and drill reports: one record model each, one header, one writer; Slack says what they say."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from test_backup_logic import report_data

from opsdag.backups.drill_verification import measure
from opsdag.notify.backup_messages import backup_message, drill_message
from opsdag.reports.backup_record import BackupReport
from opsdag.reports.backup_report import build_backup_report, render_markdown, write_backup_report
from opsdag.reports.drill_record import DrillReport, drill_history
from opsdag.reports.drill_report import build_drill_report, write_drill_report

RUN_ID = "scheduled__2026-01-02T02:00:00+00:00"


def backup_run(**overrides):
    data = {
        "database": "demo-db",
        "run_id": RUN_ID,
        "started_at": "2026-01-02T02:00:00+00:00",
        "finished_at": "2026-01-02T02:00:09+00:00",
        "states": dict.fromkeys(
            ["preflight", "backup", "manifest", "verify", "retention", "publish"], "success"
        ),
        "preflight": {"server": "db:5432", "server_version": "15.8", "database_bytes": 1_054_000_000},
        "backup": {
            "backup_id": "20260102T020000Z-abc123",
            "method": "logical",
            "database_bytes": 1_054_000_000,
            "consistent_at": "2026-01-02T02:00:01+00:00",
            "tables": 4,
            "timings": {"dump_seconds": 3.1, "stats_seconds": 0.8, "total_seconds": 4.0},
        },
        "manifest": {
            "backup_id": "20260102T020000Z-abc123",
            "location": "file:///b/demo-db/20260102T020000Z-abc123",
            "files": 7,
            "bytes": 19_000_000,
            "tables": 4,
        },
        "verification": {
            "status": "verified",
            "contents": "pg_restore --list: 40 entries, data of all 4 tables",
            "problems": [],
            "timings": {"checksum_seconds": 0.1, "total_seconds": 0.4},
        },
        "retention": {
            "dry_run": False,
            "keep": {"20260102T020000Z-abc123": ["last 2"], "20260101T020000Z-000001": ["last 2"]},
            "delete": {"20251230T020000Z-000000": "beyond last 2, daily 0, weekly 0, monthly 0"},
            "deleted": ["20251230T020000Z-000000"],
        },
        "published": {"backup_id": "20260102T020000Z-abc123"},
        "failed_task": None,
        "error": None,
    }
    data.update(overrides)
    return build_backup_report(**data)


def test_a_backup_report_is_written_with_its_header_figures_and_retention_decisions(tmp_path):
    report = backup_run()
    assert report.ok and report.result == "verified" and report.pruned == 1
    written = write_backup_report(report, tmp_path)
    assert written.json == tmp_path / "backup__demo-db" / f"{RUN_ID}.json"
    data = json.loads(written.json.read_text())
    assert next(iter(data)) == "format" and data["format"] == "opsdag.backup-report/1"
    assert BackupReport.model_validate(data) == report
    assert (data["stored_bytes"], data["backup_seconds"], data["verify_seconds"]) == (19_000_000, 4.0, 0.4)
    markdown = written.markdown.read_text()
    assert markdown.startswith("# Backup of `demo-db`: VERIFIED")
    assert f"> {report.summary}" in markdown
    assert "| backup time | 4.0 s (dump 3.1 s, table stats 0.8 s) |" in markdown
    assert "| throughput | 263.5 MB/s |" in markdown
    assert "| `20260101T020000Z-000001` | keep | last 2 |" in markdown
    assert "| `20251230T020000Z-000000` | deleted | beyond last 2, daily 0, weekly 0, monthly 0 |" in markdown


def test_slack_and_the_note_say_what_the_backup_report_says():
    report = backup_run()
    text, blocks = backup_message(report, report_file="/r/backup__demo-db/x.md")
    assert text.replace("*", "").replace("`", "") == f":white_check_mark: {report.summary}"
    assert blocks[0]["text"]["text"] == text and "/r/backup__demo-db/x.md" in json.dumps(blocks[-1])
    dry = backup_run(retention={"dry_run": True, "keep": {}, "delete": {"a": "old"}, "deleted": []})
    assert dry.pruned == 0
    assert dry.summary.endswith("verified in 0.4 s; retention dry run: 1 old backup(s) would be pruned")
    assert "| `a` | would delete | old |" in render_markdown(dry)


def test_a_failed_backup_report_names_the_failing_step_and_its_own_error():
    report = backup_run(
        states={"preflight": "success", "backup": "success", "manifest": "success", "verify": "failed"},
        verification={"status": "bad", "problems": ["pg_restore: error: could not read TOC"], "timings": {}},
        retention=None,
        published=None,
        failed_task="verify",
        error="AirflowFailException: backup 20260102T020000Z-abc123 is bad: could not read TOC\ntraceback",
    )
    assert report.result == "failed" and not report.ok
    assert report.problems == [
        "verify: AirflowFailException: backup 20260102T020000Z-abc123 is bad: could not read TOC\ntraceback",
        "verification: pg_restore: error: could not read TOC",
    ]
    assert report.summary == (
        "Backup of demo-db FAILED at verify: AirflowFailException: backup 20260102T020000Z-abc123 is bad: "
        "could not read TOC"
    )
    assert [(s.name, s.status) for s in report.steps][3:] == [
        ("verify", "failed"),
        ("retention", "not run"),
        ("publish", "not run"),
    ]
    markdown = render_markdown(report)
    assert "| verify | failed | AirflowFailException: backup" in markdown and "## Problems" in markdown
    text, blocks = backup_message(report)
    error = report.summary.split(": ", 1)[1]
    assert text == f":red_circle: Backup of *demo-db* FAILED at `verify`: {error} (run `{RUN_ID}`)"
    assert "could not read TOC" in blocks[1]["text"]["text"]  # the problems, one per line


def test_a_backup_that_failed_before_dumping_still_gets_a_report():
    report = build_backup_report(
        database="demo-db",
        run_id="r",
        backup=None,
        manifest=None,
        verification=None,
        retention=None,
        failed_task="preflight",
        error="AirflowFailException: server db:5432 is not reachable",
        backup_id="20260102T020000Z-abc123",
    )
    assert report.dag_id == "backup__demo-db" and report.backup_id == "20260102T020000Z-abc123"
    markdown = render_markdown(report)
    assert "| preflight | not run | AirflowFailException: server db:5432 is not reachable |" in markdown
    assert "## Retention\n\nDid not run." in markdown


def test_user_and_tool_text_in_a_report_cannot_break_its_markdown():
    report = backup_run(
        states={"preflight": "success", "backup": "failed"},
        failed_task="backup",
        error="pg_dump: bad | row\x1b[31m\u202e\nsecond line",
    )
    step = next(line for line in render_markdown(report).splitlines() if line.startswith("| backup |"))
    assert step == "| backup | failed | pg_dump: bad \\| row[31m second line |"


def test_a_drill_report_starts_with_its_format_and_reads_back_into_its_model(tmp_path):
    report = build_drill_report(**report_data())
    written = write_drill_report(report, tmp_path)
    data = json.loads(written.json.read_text())
    assert list(data)[:2] == ["format", "dag_id"] and data["format"] == "opsdag.drill-report/2"
    assert DrillReport.model_validate(data) == report
    assert data["restore"] == {"pg_restore_seconds": 3.2, "task_seconds": 3.5}  # kept as the task said
    assert "Restore timings: pg_restore 3.2 s, task 3.5 s." in written.markdown.read_text()


def test_the_rto_trend_reads_reports_of_the_old_format_too(tmp_path):
    folder = tmp_path / "drill__demo-db"
    folder.mkdir()
    legacy = {
        "kind": "opsdag-drill-report/1",
        "dag_id": "drill__demo-db",
        "run_id": "manual__2025-12-01",
        "started_at": "2025-12-01T00:00:00+00:00",
        "result": "passed",
        "measure": {"rto_seconds": 8.4},
    }
    (folder / "manual__2025-12-01.json").write_text(json.dumps(legacy))
    (folder / "notes.json").write_text(json.dumps({"format": "opsdag.release-report/1", "run_id": "x"}))
    assert [r["run_id"] for r in drill_history("drill__demo-db", tmp_path)] == ["manual__2025-12-01"]
    written = write_drill_report(build_drill_report(**report_data()), tmp_path)
    trend = written.markdown.read_text().split("## Trend")[1]
    assert trend.index("manual__2025-12-01") < trend.index("manual__2026-01-02")
    assert "| 8.4 s |" in trend and "| 4.2 s |" in trend


def test_slack_says_what_the_drill_report_says():
    passed = build_drill_report(**report_data())
    assert drill_message(passed)[0] == f":white_check_mark: {passed.summary}"
    failed = build_drill_report(**report_data(result_ok=False))
    text, blocks = drill_message(failed)
    assert text == f":rotating_light: <!here> DR drill FAILED: {failed.summary}"
    assert blocks[1]["text"]["text"] == (
        "• verify: AirflowFailException: verification failed\n• table public.orders: checksum differs"
    )


def test_an_excess_hidden_by_rounding_is_spelled_out():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    result = measure(
        provision_started=t0,
        verified_at=t0 + timedelta(seconds=30.4),
        drill_started=t0,
        consistent_at=t0,
        rto_objective=timedelta(seconds=30),
        rpo_objective=timedelta(hours=1),
    )
    assert result["problems"] == ["RTO 30 s exceeds the objective of 30 s by 0.4 s"]

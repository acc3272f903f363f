"""The spec's ``backup.wal_archive``, the backup DAG's WAL step, and what the report says about WAL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import yaml
from test_backup_reports import backup_run

from opsdag.reports.backup_report import render_markdown
from opsdag.spec.database import DatabaseSpec
from opsdag.spec.loader import parse_spec

DEMO = yaml.safe_load((Path(__file__).parents[2] / "include" / "databases" / "demo-db.yaml").read_text())
# demo-db's drill proves point-in-time copies with a marker table, which needs WAL archiving:
# the variants below that turn archiving off drop it too
UNMARKED = {**DEMO, "drill": {k: v for k, v in DEMO["drill"].items() if k != "pitr_marker"}}


def errors_of(**backup) -> list[str]:
    data = {**UNMARKED, "backup": {**DEMO["backup"], **backup}}
    return [str(e) for e in parse_spec(DatabaseSpec, data, "demo-db.yaml")[1]]


def test_a_marker_table_without_wal_archiving_is_refused():
    data = {**DEMO, "backup": {**DEMO["backup"], "wal_archive": {"enabled": False}}}
    [error] = [str(e) for e in parse_spec(DatabaseSpec, data, "demo-db.yaml")[1]]
    assert error.startswith("demo-db.yaml: drill: pitr_marker proves point-in-time restores, which need")


def test_the_demo_database_archives_wal_every_minute_at_most():
    spec = DatabaseSpec.model_validate(DEMO)
    assert spec.backup.method == "physical" and spec.backup.wal_archive.enabled
    assert spec.backup.wal_archive.archive_timeout == timedelta(seconds=60)


def test_wal_archiving_is_off_by_default_with_a_one_minute_timeout():
    backup = {k: v for k, v in DEMO["backup"].items() if k != "wal_archive"}
    spec = DatabaseSpec.model_validate({**UNMARKED, "backup": {**backup, "method": "logical"}})
    assert (
        not spec.backup.wal_archive.enabled and spec.backup.wal_archive.archive_timeout.total_seconds() == 60
    )
    assert errors_of(wal_archive={"enabled": True}) == []


def test_nonsense_wal_archiving_is_refused_naming_the_field():
    assert errors_of(method="logical", wal_archive={"enabled": True}) == [
        "demo-db.yaml: backup.wal_archive: WAL archiving needs method: physical (the method is 'logical'): "
        "archived WAL replays onto a pg_basebackup copy, never onto a pg_dump; switch the method or set "
        "enabled: false"
    ]
    assert errors_of(method="logical", wal_archive={"enabled": False}) == []
    [remote] = errors_of(storage="s3://bucket/backups", wal_archive={"enabled": True})
    assert remote.startswith("demo-db.yaml: backup.wal_archive: WAL archiving writes to a local or mounted")
    [unknown] = errors_of(wal_archive={"enabled": True, "retention": "7d"})
    assert unknown.startswith("demo-db.yaml: backup.wal_archive.retention: unknown key")
    [short] = errors_of(wal_archive={"enabled": True, "archive_timeout": "1500ms"})
    assert short.startswith(
        "demo-db.yaml: backup.wal_archive.archive_timeout: 1.5 s is not an archive_timeout"
    )


def test_the_backup_dag_checks_wal_between_verify_and_retention_only_when_archiving():
    from opsdag.factory.backup_dag import backup_dag

    dag = backup_dag(DatabaseSpec.model_validate(DEMO))
    check = dag.get_task("wal_continuity")
    assert check.upstream_task_ids == {"verify"} and check.downstream_task_ids == {"retention"}
    assert "WAL archiving: on (archive_timeout 1m)" in dag.doc_md
    off = {**DEMO["backup"], "method": "logical", "wal_archive": {"enabled": False}}
    logical = {**UNMARKED, "backup": off}
    plain = backup_dag(DatabaseSpec.model_validate(logical))
    assert "wal_continuity" not in plain.task_ids and plain.get_task("retention").upstream_task_ids == {
        "verify"
    }
    assert "WAL archiving: off" in plain.doc_md


WAL_OK = {
    "status": "ok",
    "reason": "WAL continuous from 000000010000000000000005 to 000000010000000000000009 (5 segment(s))",
    "start_segment": "000000010000000000000005",
    "end_segment": "000000010000000000000005",
    "newest_segment": "000000010000000000000009",
    "newest_at": "2026-01-02T02:00:40+00:00",
    "segments": 5,
    "first_missing": None,
    "corrupt": [],
    "rpo_seconds": 12.0,
}
STEPS = ["preflight", "backup", "manifest", "verify", "wal_continuity", "retention", "publish"]


def test_the_report_gives_the_newest_archived_point_and_the_rpo():
    retention = backup_run().retention.model_dump()
    retention["wal"] = {"reason": "keeping WAL from X", "deleted_files": 3}
    report = backup_run(states=dict.fromkeys(STEPS, "success"), retention=retention, wal=WAL_OK, steps=STEPS)
    assert report.ok and report.wal.newest_at == "2026-01-02T02:00:40+00:00" and report.wal.rpo_seconds == 12
    assert report.summary.endswith(
        "; WAL archived up to 2026-01-02 02:00:40 UTC (RPO 12 s, 5 segment(s) since the backup); "
        "1 old backup(s) pruned"
    )
    markdown = render_markdown(report)
    assert "## WAL archive" in markdown and "| wal_continuity | success |" in markdown
    assert "- newest archived point 2026-01-02 02:00:40 UTC: RPO 12 s" in markdown
    assert "- retention: keeping WAL from X; 3 file(s) pruned" in markdown
    assert report.to_json()["wal"]["newest_segment"] == "000000010000000000000009"


def test_a_gap_fails_the_report_naming_the_first_missing_segment():
    gap = {
        **WAL_OK,
        "status": "gap",
        "first_missing": "000000010000000000000007",
        "reason": "WAL gap: 000000010000000000000007 is missing from the archive (...)",
    }
    report = backup_run(
        states={**dict.fromkeys(STEPS[:4], "success"), "wal_continuity": "failed"},
        retention=None,
        published=None,
        failed_task="wal_continuity",
        error=f"AirflowFailException: {gap['reason']}",
        wal=gap,
        steps=STEPS,
    )
    assert not report.ok and report.failed_task == "wal_continuity"
    assert report.summary.startswith(
        "Backup of demo-db FAILED at wal_continuity: AirflowFailException: "
        "WAL gap: 000000010000000000000007 is missing"
    )
    markdown = render_markdown(report)
    assert "- first missing segment `000000010000000000000007`" in markdown
    assert "| retention | not run |" in markdown

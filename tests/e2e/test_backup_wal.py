# ruff: noqa: F811  (pytest fixtures imported from a helper module are redefined as arguments)
"""``backup__<database>`` with WAL archiving, end to end: ``dag.test()`` against a real PostgreSQL
whose ``archive_command`` is ``opsdag wal push`` (the server of tests/integration/test_wal_archive.py).

A run checks the archive from its base backup's start and reports the newest archived
point (report, Asset event); a segment deleted from the archive fails the run, naming it.
"""

from __future__ import annotations

import json
import runpy
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest_backup import (  # noqa: F401  (fixtures)
    airflow_home,
    fake_tool_dir,
    migrated_airflow_db,
    run_dag,
    spec_data,
)
from pg_fixtures import connection_env
from test_wal_archive import DB, archiving  # noqa: F401  (the archiving server)
from wal_fixtures import archive_env

pytestmark = pytest.mark.e2e

TASKS = [
    "preflight",
    "backup",
    "manifest",
    "verify",
    "wal_continuity",
    "retention",
    "publish",
    "report",
    "notify",
]

# pg_basebackup, then the archive loses the backup's start segment (as if someone deleted it),
# then one more segment is archived: the chain from the backup's start has a hole.
LOSE_START_SEGMENT = """
import json, os, pathlib, subprocess, sys, time
real, wal_dir, args = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3:]
done = subprocess.run([real, *args])
if done.returncode:
    sys.exit(done.returncode)
out = next((a.split("=", 1)[1] for a in args if a.startswith("--pgdata=")), None)
if out is None:  # --version
    sys.exit(0)
first = json.loads((pathlib.Path(out) / "backup_manifest").read_text())["WAL-Ranges"][0]
hi, lo = (int(x, 16) for x in first["Start-LSN"].split("/"))
number = ((hi << 32) | lo) >> 24
start = f"{int(first['Timeline']):08X}{number >> 8:08X}{number & 0xFF:08X}"
deadline = time.monotonic() + 60
while not (wal_dir / (start + ".sha256")).exists() and time.monotonic() < deadline:
    time.sleep(0.2)
(wal_dir / start).unlink()
(wal_dir / (start + ".sha256")).unlink()
psql = str(pathlib.Path(real).with_name("psql"))
sql = "CREATE TABLE IF NOT EXISTS filler (x int); INSERT INTO filler VALUES (1); SELECT pg_switch_wal();"
subprocess.run([psql, "-X", "-q", "-c", sql], check=True, stdout=subprocess.DEVNULL)
print("lost", start, file=sys.stderr)
"""


# pg_basebackup, then the backup's end segment is taken out of the archive and put back
# 25 s later by a detached process (after the manifest and verify steps): the archiver
# running behind the backup.
HOLD_END_SEGMENT = """
import json, pathlib, shutil, subprocess, sys, time
real, wal_dir, marks, args = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]), sys.argv[4:]
done = subprocess.run([real, *args])
if done.returncode:
    sys.exit(done.returncode)
out = next((a.split("=", 1)[1] for a in args if a.startswith("--pgdata=")), None)
if out is None:  # --version
    sys.exit(0)
last = json.loads((pathlib.Path(out) / "backup_manifest").read_text())["WAL-Ranges"][-1]
hi, lo = (int(x, 16) for x in last["End-LSN"].split("/"))
number = (((hi << 32) | lo) - 1) >> 24
end = f"{int(last['Timeline']):08X}{number >> 8:08X}{number & 0xFF:08X}"
deadline = time.monotonic() + 60
while not (wal_dir / (end + ".sha256")).exists() and time.monotonic() < deadline:
    time.sleep(0.2)
held = marks / "held"
held.mkdir()
for name in (end, end + ".sha256"):
    shutil.move(wal_dir / name, held / name)
(marks / "held_at").write_text(str(time.time()))
release = (
    "import pathlib, shutil, sys, time; time.sleep(25); held, wal, marks = map(pathlib.Path, sys.argv[1:]); "
    "[shutil.move(p, wal / p.name) for p in sorted(held.iterdir(), reverse=True)]; "
    "(marks / 'released_at').write_text(str(time.time()))"
)
subprocess.Popen([sys.executable, "-c", release, str(held), str(wal_dir), str(marks)], start_new_session=True)
"""


@pytest.fixture
def wal_env(archiving, airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    include, state = archive_env(archiving, tmp_path, monkeypatch)
    key, value = connection_env("postgres_wal", archiving.server, "postgres")
    monkeypatch.setenv(key, value)
    spec = spec_data(
        name=DB,
        connection_id="postgres_wal",
        database="postgres",
        backup={
            "method": "physical",
            "table_checksums": False,
            "wal_archive": {"enabled": True, "archive_timeout": "60s"},
        },
        drill=None,
        notifications={},
    )
    (include / "databases" / f"{DB}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return state


def backup_dag(airflow_home: Path):
    return runpy.run_path(str(airflow_home / "dags" / "opsdag_databases.py"))[f"backup__{DB}"]


def report_of(state: Path, result) -> dict:
    return json.loads((state / "reports" / f"backup__{DB}" / f"{result.dagrun.run_id}.json").read_text())


def test_a_backup_run_checks_the_wal_archive_and_reports_the_newest_archived_point(
    wal_env, airflow_home, archiving
):
    result = run_dag(backup_dag(airflow_home))

    assert result.state == "success", result.states
    assert result.states == dict.fromkeys(TASKS, "success")
    wal = result.xcoms["wal_continuity.return_value"]
    backup_id = result.xcoms["backup.return_value"]["backup_id"]
    assert wal["status"] == "ok" and wal["first_missing"] is None and wal["segments"] >= 1
    assert (archiving.directory / wal["newest_segment"]).exists()
    assert 0 <= wal["rpo_seconds"] < 120

    report = report_of(wal_env, result)
    assert (
        report["wal"]["newest_at"] == wal["newest_at"]
        and report["wal"]["start_segment"] == wal["start_segment"]
    )
    assert "WAL archived up to" in report["summary"] and "RPO" in report["summary"]
    assert report["retention"]["wal"]["boundary"] is not None

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        [event] = [
            e
            for e in session.query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            if e.asset.uri == f"x-opsdag://backups/{DB}" and e.source_run_id == result.dagrun.run_id
        ]
    assert event.extra["backup_id"] == backup_id
    assert event.extra["wal"]["newest_at"] == wal["newest_at"]
    assert event.extra["wal"]["newest_segment"] == wal["newest_segment"]


def test_a_segment_missing_from_the_archive_fails_the_run_naming_it(
    wal_env, airflow_home, archiving, tmp_path, monkeypatch
):
    from opsdag.backups.pg import pg_tool

    script = tmp_path / "lose_start_segment.py"
    script.write_text(textwrap.dedent(LOSE_START_SEGMENT))
    real = pg_tool("pg_basebackup")
    body = f'exec "{sys.executable}" "{script}" "{real}" "{archiving.directory}" "$@"'
    monkeypatch.setenv("OPSDAG_PG_BIN", str(fake_tool_dir(tmp_path, {"pg_basebackup": body})))

    result = run_dag(backup_dag(airflow_home))

    assert result.state == "failed"
    assert result.states["verify"] == "success" and result.states["wal_continuity"] == "failed"
    assert result.states["publish"] == "upstream_failed" and result.states["report"] == "success"
    wal = result.xcoms["wal_continuity.wal"]
    missing = wal["first_missing"]
    assert wal["status"] == "gap" and missing == wal["start_segment"]
    assert not (archiving.directory / missing).exists()
    report = report_of(wal_env, result)
    assert report["result"] == "failed" and report["failed_task"] == "wal_continuity"
    assert f"WAL gap: {missing} is missing from the archive" in report["error"]
    assert report["wal"]["first_missing"] == missing


def test_a_backup_whose_end_segment_arrives_late_waits_for_it_deferred(
    wal_env, airflow_home, archiving, tmp_path, monkeypatch
):
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    from opsdag.backups.pg import pg_tool

    script = tmp_path / "hold_end_segment.py"
    script.write_text(textwrap.dedent(HOLD_END_SEGMENT))
    marks = tmp_path / "marks"
    marks.mkdir()
    real = pg_tool("pg_basebackup")
    body = f'exec "{sys.executable}" "{script}" "{real}" "{archiving.directory}" "{marks}" "$@"'
    monkeypatch.setenv("OPSDAG_PG_BIN", str(fake_tool_dir(tmp_path, {"pg_basebackup": body})))

    result = run_dag(backup_dag(airflow_home))

    assert result.state == "success", result.states
    released = float((marks / "released_at").read_text())
    assert float((marks / "held_at").read_text()) < released
    with create_session() as session:
        ti = (
            session.query(TaskInstance).filter_by(run_id=result.dagrun.run_id, task_id="wal_continuity").one()
        )
        # it started before the segment was back, waited (deferred), and then saw it
        assert ti.start_date.timestamp() < released <= ti.end_date.timestamp()
    assert result.xcoms["wal_continuity.return_value"]["status"] == "ok"

# ruff: noqa: F811  (pytest fixtures imported from a helper module are redefined as arguments)
"""``backup__<database>`` end to end: ``dag.test()`` against a real PostgreSQL, Slack recorded."""

from __future__ import annotations

import json
import runpy
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest_backup import (  # noqa: F401  (fixtures)
    airflow_home,
    fake_tool_dir,
    make_db,
    migrated_airflow_db,
    opsdag_env,
    pg_server,
    run_dag,
    write_spec,
)
from support.slack_server import SlackRecorder

from opsdag.backups import engine
from opsdag.backups.storage import BackupStore

pytestmark = pytest.mark.e2e

TASKS = ["preflight", "backup", "manifest", "verify", "retention", "publish", "report", "notify"]


def dags(airflow_home: Path) -> dict:
    return runpy.run_path(str(airflow_home / "dags" / "opsdag_databases.py"))


def report_of(env, result) -> tuple[dict, str]:
    """The run's backup report: ``<reports>/backup__e2e-db/<run_id>.json`` and ``.md``."""
    directory = env.reports / "backup__e2e-db"
    data = json.loads((directory / f"{result.dagrun.run_id}.json").read_text())
    return data, (directory / f"{result.dagrun.run_id}.md").read_text()


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch):
    with SlackRecorder() as recorder:
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_E2E", recorder.connection_json())
        yield recorder


def test_a_scheduled_backup_runs_through_and_publishes(opsdag_env, airflow_home, pg_server, slack, capfd):
    write_spec(opsdag_env)
    dag = dags(airflow_home)["backup__e2e-db"]
    assert dag.schedule == "0 2 * * *"
    result = run_dag(dag)

    assert result.state == "success", result.states
    assert result.states == dict.fromkeys(TASKS, "success")
    backup_id = result.xcoms["backup.return_value"]["backup_id"]
    manifest = json.loads((opsdag_env.backups / "e2e-db" / backup_id / "manifest.json").read_text())
    assert manifest["run"]["dag_id"] == "backup__e2e-db" and manifest["dbname"] == opsdag_env.dbname
    assert result.xcoms["verify.return_value"]["status"] == "verified"
    assert result.xcoms["publish.return_value"]["backup_id"] == backup_id

    # The Asset event the drill DAG is scheduled on.
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        events = [
            e
            for e in session.query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            if e.asset.uri == "x-opsdag://backups/e2e-db" and e.source_run_id == result.dagrun.run_id
        ]
    assert len(events) == 1 and events[0].extra["backup_id"] == backup_id

    [message] = slack.wait_for(1)
    assert "e2e-db" in message["text"] and "verified" in message["text"] and "/s" in message["text"]

    report, markdown = report_of(opsdag_env, result)
    assert report["format"] == "opsdag.backup-report/1" and report["result"] == "verified"
    assert report["backup_id"] == backup_id and report["method"] == "logical" and report["published"]
    assert report["stored_bytes"] == manifest["bytes"] and report["throughput_bytes_per_s"] > 0
    assert report["verification"]["status"] == "verified" and report["retention"]["dry_run"] is False
    assert message["text"].replace("*", "").replace("`", "") == f":white_check_mark: {report['summary']}"
    assert markdown.startswith("# Backup of `e2e-db`: VERIFIED") and "## Retention" in markdown
    assert result.xcoms["report.return_value"]["summary"] == report["summary"]

    captured = capfd.readouterr()
    logs = captured.out + captured.err
    logs += "".join(p.read_text(errors="replace") for p in (airflow_home / "logs").rglob("*") if p.is_file())
    assert "pg_dump" in logs  # the task logs were captured
    assert pg_server.password not in logs


def test_a_backup_that_fails_verification_fails_the_run_and_says_so(
    opsdag_env,
    airflow_home,
    slack,
    tmp_path,
    monkeypatch,
):
    from opsdag.backups.pg import pg_tool

    write_spec(opsdag_env)
    # pg_restore works while the backup is written (it lists the dump to name its tables'
    # data files) and fails on the published copy, which is what verify reads
    fails_on_published = (
        f'case "$*" in *.partial-*) exec "{pg_tool("pg_restore")}" "$@" ;; esac; '
        'echo "pg_restore: error: could not read TOC" >&2; exit 1'
    )
    broken = fake_tool_dir(tmp_path, {"pg_restore": fails_on_published})
    monkeypatch.setenv("OPSDAG_PG_BIN", str(broken))
    result = run_dag(dags(airflow_home)["backup__e2e-db"])

    assert result.state == "failed"
    assert result.states["verify"] == "failed" and result.states["publish"] == "upstream_failed"
    assert result.states["notify"] == "failed"  # after notifying: the run's state is the backup's
    [stored] = BackupStore(opsdag_env.backups).list_backups("e2e-db")
    assert stored.state == "bad" and "could not read TOC" in " ".join(stored.verification["problems"])
    [message] = slack.wait_for(1)
    assert "FAILED" in message["text"] and "`verify`" in message["text"]
    assert result.states["report"] == "success"  # the report is written whatever failed
    report, markdown = report_of(opsdag_env, result)
    assert report["result"] == "failed" and report["failed_task"] == "verify"
    assert report["problems"][0].startswith("verify: ") and "could not read TOC" in " ".join(
        report["problems"]
    )
    assert "| verify | failed |" in markdown and "| publish | upstream_failed |" in markdown


def test_retention_dry_run_lists_and_a_real_run_prunes(opsdag_env, airflow_home, pg_server):
    from pg_fixtures import target_for

    write_spec(
        opsdag_env, retention={"keep_last": 1, "daily": 0, "weekly": 0, "monthly": 0}, notifications={}
    )
    store = BackupStore(opsdag_env.backups)
    old = []
    for day in (1, 2):
        backup_id = engine.backup_id_for(datetime(2026, 1, day, 2, tzinfo=UTC), f"old-{day}")
        engine.take_backup(
            target_for(pg_server, opsdag_env.dbname), store, "e2e-db", backup_id, engine.BackupOptions()
        )
        engine.publish_manifest(store, "e2e-db", backup_id)
        engine.verify(store, "e2e-db", backup_id)
        old.append(backup_id)

    dag = dags(airflow_home)["backup__e2e-db"]
    dry = run_dag(dag, {"dry_run_retention": True})
    assert dry.state == "success"
    assert dry.xcoms["retention.return_value"]["dry_run"] is True
    assert sorted(dry.xcoms["retention.return_value"]["delete"]) == old
    _, markdown = report_of(opsdag_env, dry)
    assert all(f"| `{backup_id}` | would delete |" in markdown for backup_id in old)
    assert len(store.list_backups("e2e-db")) == 3

    real = run_dag(dags(airflow_home)["backup__e2e-db"])  # a fresh DAG: dag.test() keeps the last conf
    assert real.state == "success"
    assert real.xcoms["retention.return_value"]["dry_run"] is False, real.xcoms["retention.return_value"]
    # keep_last 1: only the newest verified backup is left, the one this run took.
    assert [b.id for b in store.list_backups("e2e-db")] == [real.xcoms["backup.return_value"]["backup_id"]]


def test_an_unknown_run_conf_key_is_refused_naming_it_before_anything_is_written(
    opsdag_env, airflow_home, pg_server
):
    write_spec(opsdag_env, notifications={})
    result = run_dag(dags(airflow_home)["backup__e2e-db"], {"dry_run": True})  # meant dry_run_retention
    assert result.state == "failed"
    assert result.states["preflight"] == "failed" and result.states["backup"] == "upstream_failed"
    assert "dry_run: unknown key; allowed here: dry_run_retention" in result.xcoms["preflight.error"]
    assert not (opsdag_env.backups / "e2e-db").exists() or not any((opsdag_env.backups / "e2e-db").iterdir())

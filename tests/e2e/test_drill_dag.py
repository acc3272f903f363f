# ruff: noqa: F811  (pytest fixtures imported from a helper module are redefined as arguments)
"""``drill__<database>`` end to end: ``dag.test()`` against a real PostgreSQL, Slack recorded."""

from __future__ import annotations

import gzip
import json
import runpy
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest_backup import (  # noqa: F401  (fixtures)
    OpsdagEnv,
    airflow_home,
    make_db,
    migrated_airflow_db,
    opsdag_env,
    pg_server,
    run_dag,
    write_spec,
)
from pg_fixtures import table_rows, target_for
from support.slack_server import SlackRecorder

from opsdag.backups import engine
from opsdag.backups.pg import pg_tool
from opsdag.backups.storage import BackupStore

pytestmark = pytest.mark.e2e

DRILL_TASKS = ["pick_backup", "provision", "restore", "verify", "measure", "teardown", "report", "notify"]


def dags(airflow_home: Path) -> dict:
    return runpy.run_path(str(airflow_home / "dags" / "opsdag_databases.py"))


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch):
    with SlackRecorder() as recorder:
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_E2E", recorder.connection_json())
        yield recorder


def take_backup(env: OpsdagEnv, pg_server, method: str = "logical", run: str = "") -> str:
    """A verified backup of the test database, taken by the engine (quicker than a DAG run).
    ``run`` names the run, so that two backups taken within a second are two backups."""
    store = BackupStore(env.backups)
    backup_id = engine.backup_id_for(datetime.now(UTC), f"{env.dbname}-{method}{run}")
    options = engine.BackupOptions(
        method=method, compression="zstd" if method == "physical" else "gzip", level=3
    )
    engine.take_backup(target_for(pg_server, env.dbname), store, "e2e-db", backup_id, options)
    engine.publish_manifest(store, "e2e-db", backup_id)
    assert engine.verify(store, "e2e-db", backup_id)["status"] == "verified"
    return backup_id


def drill_databases(pg_server) -> list[str]:
    return [
        name
        for name in pg_server.psql("SELECT datname FROM pg_database ORDER BY 1;").split()
        if name.startswith("opsdag_drill_")
    ]


def report_of(env: OpsdagEnv, result) -> tuple[dict, str]:
    directory = env.reports / "drill__e2e-db"
    data = json.loads((directory / f"{result.dagrun.run_id}.json").read_text())
    return data, (directory / f"{result.dagrun.run_id}.md").read_text()


def dump_file_of(backup_dir: Path, schema: str, table: str) -> Path:
    """The data file of one table in a directory-format dump (from ``pg_restore --list``)."""
    listing = subprocess.run(
        [pg_tool("pg_restore"), "--list", str(backup_dir / "data")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in listing.splitlines():
        if f" TABLE DATA {schema} {table} " in line:
            return backup_dir / "data" / f"{line.split(';')[0]}.dat.gz"
    raise AssertionError(f"no TABLE DATA for {schema}.{table}")


def rehash(env: OpsdagEnv, backup_id: str, path: Path) -> None:
    """Make the manifest agree with a file changed on purpose (as if it had been written so)."""
    store = BackupStore(env.backups)
    manifest_path = env.backups / "e2e-db" / backup_id / "manifest.json"
    data = json.loads(manifest_path.read_text())
    rel = str(path.relative_to(env.backups / "e2e-db" / backup_id))
    for entry in data["files"]:
        if entry["path"] == rel:
            entry["bytes"], entry["sha256"] = store.hash_file(store.backup_dir("e2e-db", backup_id) / rel)
    manifest_path.write_text(json.dumps(data))


def test_backup_then_drill_passes_reports_and_leaves_nothing(opsdag_env, airflow_home, pg_server, slack):
    write_spec(opsdag_env)
    everything = dags(airflow_home)
    backup = run_dag(everything["backup__e2e-db"])
    assert backup.state == "success", backup.states
    backup_id = backup.xcoms["backup.return_value"]["backup_id"]
    slack.reset()

    result = run_dag(everything["drill__e2e-db"])
    assert result.state == "success", result.states
    assert result.states == dict.fromkeys(DRILL_TASKS, "success")
    report, markdown = report_of(opsdag_env, result)
    assert report["result"] == "passed" and report["problems"] == []
    assert report["backup"]["backup_id"] == backup_id
    assert {t["table"] for t in report["verification"]["tables"]} >= {
        "public.orders",
        "Odd Schema.Mixed Case",
    }
    assert all(t["ok"] for t in report["verification"]["tables"])
    assert [c["ok"] for c in report["verification"]["checks"]] == [True, True]
    measure = report["measure"]
    assert 0 < measure["rto_seconds"] < 900 and 0 <= measure["rpo_seconds"] < 3600
    assert [p["name"] for p in report["phases"]] == DRILL_TASKS[:6]
    assert all(p["seconds"] is not None for p in report["phases"])
    assert report["summary"] in markdown and "## Trend" in markdown and "← this drill" in markdown
    assert result.xcoms["report.return_value"]["summary"] == report["summary"]
    # Nothing of the drill is left: no scratch database, no working directory.
    assert drill_databases(pg_server) == []
    assert not any((opsdag_env.state / "scratch" / "drills").glob("*"))
    [message] = slack.wait_for(1)
    assert "PASSED" in message["text"] and "RTO" in message["text"] and "RPO" in message["text"]

    again = run_dag(dags(airflow_home)["drill__e2e-db"])
    assert again.state == "success"
    _, markdown = report_of(opsdag_env, again)
    assert markdown.count("| passed |") == 2  # the trend shows both drills


def published_event(backup_run):
    """The Asset event a backup DAG run published (its extra names the backup)."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        [event] = session.query(AssetEvent).filter(AssetEvent.source_run_id == backup_run.dagrun.run_id).all()
        session.expunge(event)
        return event


@pytest.fixture
def triggered_by(monkeypatch: pytest.MonkeyPatch):
    """Make the next ``dag.test()`` run (only that one) consume an Asset event, as a scheduler-made run does.

    ``dag.test()`` always creates a manual run; the scheduler creates an asset-triggered
    run with the events it consumed, which the Task SDK hands to tasks as
    ``triggering_asset_events``. This attaches the event to the run ``dag.test()`` creates.
    """
    import airflow.models.dagrun as dagrun_module

    create = dagrun_module.get_or_create_dagrun

    def consume(event):
        def create_consuming(**kwargs):
            monkeypatch.setattr(dagrun_module, "get_or_create_dagrun", create)  # this run only
            run = create(**kwargs)
            session = kwargs["session"]
            run.consumed_asset_events.append(session.merge(event))
            session.commit()
            return run

        monkeypatch.setattr(dagrun_module, "get_or_create_dagrun", create_consuming)

    return consume


def test_a_drill_started_by_a_backup_restores_that_backup_not_the_newest(
    opsdag_env, airflow_home, pg_server, triggered_by
):
    write_spec(opsdag_env, notifications={})
    backup = run_dag(dags(airflow_home)["backup__e2e-db"])
    assert backup.state == "success", backup.states
    announced = backup.xcoms["backup.return_value"]["backup_id"]
    event = published_event(backup)
    assert event.extra["backup_id"] == announced
    newer = take_backup(opsdag_env, pg_server)  # verified, newer, and not what the event announced
    assert BackupStore(opsdag_env.backups).newest_verified("e2e-db").id == newer != announced

    triggered_by(event)
    result = run_dag(dags(airflow_home)["drill__e2e-db"])
    assert result.state == "success", result.states
    report, markdown = report_of(opsdag_env, result)
    assert report["backup"]["backup_id"] == announced
    assert report["backup"]["chosen_because"].startswith(
        f"announced by the asset event of backup__e2e-db / {backup.dagrun.run_id} at "
    )
    assert f"id `{announced}`" in markdown and "- chosen: announced by the asset event" in markdown

    manual = run_dag(dags(airflow_home)["drill__e2e-db"])  # no event: the newest verified
    assert manual.state == "success", manual.states
    assert report_of(opsdag_env, manual)[0]["backup"]["backup_id"] == newer


def test_a_table_altered_after_the_manifest_fails_verification_naming_it(
    opsdag_env, airflow_home, pg_server, slack
):
    write_spec(opsdag_env)
    backup_id = take_backup(opsdag_env, pg_server)
    data_file = dump_file_of(opsdag_env.backups / "e2e-db" / backup_id, "public", "customers")
    lines = gzip.decompress(data_file.read_bytes()).decode().split("\n")
    lines[5] = lines[5].replace("customer ", "customer X", 1)  # one value of one row
    data_file.write_bytes(gzip.compress("\n".join(lines).encode()))
    rehash(opsdag_env, backup_id, data_file)

    result = run_dag(dags(airflow_home)["drill__e2e-db"])
    assert result.state == "failed"
    assert result.states["verify"] == "failed" and result.states["teardown"] == "success"
    assert "table public.customers: checksum differs" in result.xcoms["verify.error"]
    report, markdown = report_of(opsdag_env, result)
    assert report["result"] == "failed"
    assert report["problems"][0].startswith("verify: ")
    assert "table public.customers: checksum differs" in report["problems"]
    bad = [t for t in report["verification"]["tables"] if not t["ok"]]
    assert [t["table"] for t in bad] == ["public.customers"]
    assert "| `public.customers` | 300 | 300 | differs | **NO** |" in markdown
    verification = json.loads((opsdag_env.backups / "e2e-db" / backup_id / "verification.json").read_text())
    assert verification["status"] == "bad"
    assert verification["problems"] == ["table public.customers: restored data differs from the manifest"]
    assert drill_databases(pg_server) == []
    [message] = slack.wait_for(1)
    assert "DR drill FAILED" in message["text"] and "public.customers" in json.dumps(message)


def test_a_corrupted_file_fails_the_restore_and_still_tears_down(opsdag_env, airflow_home, pg_server, slack):
    write_spec(opsdag_env)
    backup_id = take_backup(opsdag_env, pg_server)
    data_file = dump_file_of(opsdag_env.backups / "e2e-db" / backup_id, "public", "orders")
    raw = bytearray(data_file.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = bytes(64)  # garbage in the middle of the gzip stream
    data_file.write_bytes(bytes(raw))
    rehash(opsdag_env, backup_id, data_file)  # past the checksums: pg_restore itself must fail

    result = run_dag(dags(airflow_home)["drill__e2e-db"])
    assert result.state == "failed"
    assert result.states["restore"] == "failed"
    assert result.states["verify"] == "upstream_failed" and result.states["measure"] == "upstream_failed"
    assert result.states["teardown"] == "success"
    assert "pg_restore failed" in result.xcoms["restore.error"]
    assert result.xcoms["teardown.return_value"]["actions"][0].startswith("dropped database opsdag_drill_")
    assert drill_databases(pg_server) == []
    report, _ = report_of(opsdag_env, result)
    assert report["result"] == "failed" and report["problems"][0].startswith("restore: ")
    assert report["teardown"]["clean"] is True


def test_a_flipped_byte_is_refused_before_pg_restore_reads_it(opsdag_env, airflow_home, pg_server):
    write_spec(opsdag_env, notifications={})
    backup_id = take_backup(opsdag_env, pg_server)
    toc = opsdag_env.backups / "e2e-db" / backup_id / "data" / "toc.dat"
    raw = bytearray(toc.read_bytes())
    raw[100] ^= 0xFF
    toc.write_bytes(bytes(raw))
    result = run_dag(dags(airflow_home)["drill__e2e-db"])
    assert result.states["restore"] == "failed" and result.states["teardown"] == "success"
    assert "data/toc.dat: does not match the manifest" in result.xcoms["restore.error"]
    assert drill_databases(pg_server) == []


def test_a_backup_a_drill_proved_corrupt_is_marked_bad_and_the_next_drill_restores_another(
    opsdag_env, airflow_home, pg_server
):
    """A drill that finds a stored file not matching the manifest marks the backup bad, so that
    retention never keeps it as the newest good one and the next drill picks another."""
    from opsdag.backups.retention import RetentionPolicy, plan_retention

    write_spec(opsdag_env, notifications={})
    older = take_backup(opsdag_env, pg_server, run="older")
    newer = take_backup(opsdag_env, pg_server, run="newer")
    toc = opsdag_env.backups / "e2e-db" / newer / "data" / "toc.dat"
    raw = bytearray(toc.read_bytes())
    raw[100] ^= 0xFF
    toc.write_bytes(bytes(raw))

    failed = run_dag(dags(airflow_home)["drill__e2e-db"])
    assert failed.states["restore"] == "failed"
    assert f"backup {newer} is marked bad" in failed.xcoms["restore.error"]
    verification = json.loads((opsdag_env.backups / "e2e-db" / newer / "verification.json").read_text())
    assert verification["status"] == "bad"
    assert verification["found_by"] == f"drill__e2e-db run {failed.dagrun.run_id}"
    assert "data/toc.dat: does not match the manifest" in verification["problems"][0]
    assert verification["previous"]["status"] == "verified"  # what the backup's own check said

    store = BackupStore(opsdag_env.backups)
    assert store.newest_verified("e2e-db").id == older
    records = [b.record() for b in store.list_backups("e2e-db")]
    policy = RetentionPolicy(keep_last=1, daily=0, weekly=0, monthly=0)
    plan = plan_retention(records, policy, datetime.now(UTC))
    assert "newest verified" in plan.keep[older] and newer not in plan.keep

    again = run_dag(dags(airflow_home)["drill__e2e-db"])
    assert again.state == "success", again.states
    assert report_of(opsdag_env, again)[0]["backup"]["backup_id"] == older


@pytest.mark.parametrize(
    ("conf", "named"),
    [
        ({"target_conn_id": "postgres_elsewhere"}, "target_conn_id: unknown key; allowed here: backup_id"),
        ({"backupid": "x"}, "backupid: unknown key; did you mean 'backup_id'?"),
    ],
)
def test_unknown_run_conf_keys_are_refused_naming_them_before_anything_changes(
    opsdag_env, airflow_home, pg_server, conf, named
):
    write_spec(opsdag_env, notifications={})
    take_backup(opsdag_env, pg_server)
    result = run_dag(dags(airflow_home)["drill__e2e-db"], conf)
    assert result.state == "failed"
    assert result.states["pick_backup"] == "failed" and result.states["provision"] == "upstream_failed"
    assert named in result.xcoms["pick_backup.error"]
    assert drill_databases(pg_server) == []


def test_an_rto_objective_below_the_measured_time_fails_the_drill(opsdag_env, airflow_home, pg_server, slack):
    write_spec(opsdag_env, objectives={"rto": "1ms", "rpo": "1h"})
    take_backup(opsdag_env, pg_server)
    result = run_dag(dags(airflow_home)["drill__e2e-db"])
    assert result.state == "failed"
    assert result.states["verify"] == "success" and result.states["measure"] == "failed"
    assert result.states["teardown"] == "success"
    report, markdown = report_of(opsdag_env, result)
    assert report["result"] == "failed"
    assert report["measure"]["rto_ok"] is False and report["measure"]["rpo_ok"] is True
    assert any("exceeds the objective" in p for p in report["problems"])
    assert "| RTO (provisioning -> verified copy) |" in markdown and "**NO**" in markdown
    assert drill_databases(pg_server) == []
    assert "RTO" in slack.wait_for(1)[0]["text"]


@pytest.mark.parametrize(
    ("target_conn_id", "reason"),
    [
        ("postgres_e2e_source_as_target", "points at the source database"),
        ("postgres_e2e_unmarked", "is not marked as a drill target"),
    ],
)
def test_a_drill_aimed_at_the_source_or_an_unmarked_server_refuses_before_any_change(
    opsdag_env,
    airflow_home,
    pg_server,
    slack,
    target_conn_id,
    reason,
):
    write_spec(opsdag_env, drill={"target_conn_id": target_conn_id})
    take_backup(opsdag_env, pg_server)
    databases_before = pg_server.psql("SELECT datname FROM pg_database ORDER BY 1;")
    rows_before = table_rows(target_for(pg_server, opsdag_env.dbname))

    result = run_dag(dags(airflow_home)["drill__e2e-db"])
    assert result.state == "failed"
    assert result.states["provision"] == "failed"
    assert {result.states[t] for t in ("restore", "verify", "measure")} == {"upstream_failed"}
    assert result.states["teardown"] in ("skipped", "upstream_failed")  # nothing was set up
    assert reason in result.xcoms["provision.error"]
    assert pg_server.psql("SELECT datname FROM pg_database ORDER BY 1;") == databases_before
    assert table_rows(target_for(pg_server, opsdag_env.dbname)) == rows_before
    report, _ = report_of(opsdag_env, result)
    assert report["result"] == "refused"
    assert "REFUSED" in slack.wait_for(1)[0]["text"]


def test_a_physical_backup_is_drilled_on_a_temporary_server(opsdag_env, airflow_home, pg_server):
    write_spec(opsdag_env, backup={"method": "physical", "compression": "zstd"}, notifications={})
    take_backup(opsdag_env, pg_server, method="physical")
    sockets_before = set(Path("/tmp").glob("opsdag-pg-*"))
    result = run_dag(dags(airflow_home)["drill__e2e-db"])
    assert result.state == "success", result.states
    report, _ = report_of(opsdag_env, result)
    assert report["result"] == "passed" and report["backup"]["method"] == "physical"
    assert report["teardown"]["actions"][0] == "stopped the temporary server"
    assert not any((opsdag_env.state / "scratch" / "drills").glob("*"))
    assert set(Path("/tmp").glob("opsdag-pg-*")) <= sockets_before  # the server's socket dir is gone


def test_a_point_in_time_target_without_a_wal_archive_is_refused_before_anything_changes(
    opsdag_env, airflow_home, pg_server
):
    write_spec(opsdag_env, notifications={})
    take_backup(opsdag_env, pg_server)
    result = run_dag(dags(airflow_home)["drill__e2e-db"], {"recovery_target_time": "2026-11-30T02:00:00Z"})
    assert result.state == "failed"
    assert result.states["pick_backup"] == "failed" and result.states["provision"] == "upstream_failed"
    error = result.xcoms["pick_backup.error"]
    assert "e2e-db has no WAL archive" in error and "leave it 'latest'" in error
    assert drill_databases(pg_server) == []

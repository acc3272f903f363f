# ruff: noqa: F811  (pytest fixtures imported from a helper module are redefined as arguments)
"""``drill__<database>`` recovering to a point in time, end to end: ``dag.test()`` against a real
PostgreSQL 15 archiving its WAL with ``opsdag wal push``.

A verified base backup, marker rows before and after a target time, the WAL archived; the
drill run with ``recovery_target_time`` brings back exactly the rows before the target,
measures the RPO from the last transaction that came back, and reports both. A target
the archive does not cover is refused at ``pick_backup``, naming the range, before
anything is restored.
"""

from __future__ import annotations

import json
import runpy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from conftest_backup import (  # noqa: F401  (fixtures)
    airflow_home,
    migrated_airflow_db,
    run_dag,
    spec_data,
)
from pg_fixtures import connection_env
from wal_fixtures import Archiving, archive_env, archiving_server, base_backup

pytestmark = pytest.mark.e2e

DB = "pitr-e2e"


@pytest.fixture(scope="module")
def archiving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archiving]:
    with archiving_server(tmp_path_factory.mktemp("pitr-e2e"), DB) as server:
        server.sql(
            "CREATE TABLE marker (seq serial PRIMARY KEY, note text, "
            "written_at timestamptz NOT NULL DEFAULT clock_timestamp());"
        )
        yield server


@pytest.fixture
def pitr_env(archiving, airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    include, state = archive_env(archiving, tmp_path, monkeypatch)
    for conn_id, db, extra in (
        ("postgres_pitr", "postgres", None),
        ("postgres_pitr_drill", "template1", {"opsdag_drill_target": True}),
    ):
        key, value = connection_env(conn_id, archiving.server, db, extra)
        monkeypatch.setenv(key, value)
    spec = spec_data(
        name=DB,
        connection_id="postgres_pitr",
        database="postgres",
        backup={
            "method": "physical",
            "table_checksums": False,
            "wal_archive": {"enabled": True, "archive_timeout": "60s"},
        },
        drill={
            "target_conn_id": "postgres_pitr_drill",
            "on_new_backup": False,
            "checks": [{"name": "marker-present", "sql": "select count(*) > 0 from marker", "expect": True}],
            "pitr_marker": {"table": "marker", "time_column": "written_at"},
        },
        objectives={"rto": "15m", "rpo": "5m"},
        notifications={},
    )
    (include / "databases" / f"{DB}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return state


def drill_dag(airflow_home: Path):
    return runpy.run_path(str(airflow_home / "dags" / "opsdag_databases.py"))[f"drill__{DB}"]


def write(archiving: Archiving, note: str, rows: int) -> None:
    for _ in range(rows):
        archiving.sql(f"INSERT INTO marker (note) VALUES ('{note}');")


def test_a_drill_to_a_point_in_time_restores_exactly_the_rows_before_it(archiving, pitr_env, airflow_home):
    base_backup(archiving, "pitr-e2e", verify=True)
    write(archiving, "before", 4)
    target = datetime.fromisoformat(archiving.sql("SELECT to_json(clock_timestamp())#>>'{}';"))
    write(archiving, "after", 3)
    archiving.wait_archived(archiving.switch(), timeout=60)

    result = run_dag(drill_dag(airflow_home), conf={"recovery_target_time": target.isoformat()})
    assert result.state == "success", (result.states, result.xcoms.get("report.return_value"))
    verification = result.xcoms["verify.return_value"]
    proof = verification["recovery"]["marker"]
    assert proof["ok"] and proof["restored"]["rows"] == proof["source"]["rows"] == 4
    measure = result.xcoms["measure.return_value"]
    last = datetime.fromisoformat(verification["recovery"]["last_transaction_at"])
    assert measure["rpo_seconds"] == pytest.approx((target - last).total_seconds(), abs=0.01)
    assert 0 <= measure["rpo_seconds"] < 30

    report = json.loads((pitr_env / "reports" / f"drill__{DB}" / f"{result.dagrun.run_id}.json").read_text())
    assert report["result"] == "passed"
    markdown = (pitr_env / "reports" / f"drill__{DB}" / f"{result.dagrun.run_id}.md").read_text()
    assert f"point in time {target.isoformat()}" in markdown
    assert "4 marker rows" in markdown


def test_a_target_the_archive_does_not_cover_is_refused_naming_the_range(archiving, pitr_env, airflow_home):
    base_backup(archiving, "pitr-e2e-range", verify=True)
    late = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    result = run_dag(drill_dag(airflow_home), conf={"recovery_target_time": late})
    assert result.state == "failed"
    assert result.states["pick_backup"] == "failed"
    assert result.states["restore"] != "success" and result.states["provision"] != "success"
    error = result.xcoms.get("pick_backup.error") or ""
    assert "after the newest transaction archived" in error and "can restore from" in error

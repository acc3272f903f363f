# ruff: noqa: F811  (pytest fixtures imported from a helper module are redefined as arguments)
"""``backup__<database>`` whose storage fills up during the dump: the run fails, says why, notifies.

The storage is a real 32 MiB tmpfs (root only; skipped otherwise). The database holds about
40 MB of incompressible data: preflight's estimate for a first backup (database size x 0.5
for gzip) fits in the free space, the dump itself does not, so the disk fills up during
``backup``, as it does in real life when a database grows faster than its estimate.
"""

from __future__ import annotations

import runpy
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest_backup import (  # noqa: F401  (fixtures)
    airflow_home,
    make_db,
    migrated_airflow_db,
    opsdag_env,
    pg_server,
    run_dag,
    write_spec,
)
from pg_fixtures import connection_env
from support.slack_server import SlackRecorder
from support.small_disk import mounted_tmpfs

from opsdag.backups.storage import BackupStore

pytestmark = pytest.mark.e2e


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "disk", "32m") as disk:
        yield disk


def test_a_backup_filling_its_storage_fails_the_run_naming_it_and_notifies(
    opsdag_env, airflow_home, pg_server, make_db, small_disk, monkeypatch
):
    dbname = make_db(empty=True)
    pg_server.psql(
        "CREATE EXTENSION pgcrypto; CREATE TABLE blobs (id int PRIMARY KEY, data bytea);"
        "INSERT INTO blobs SELECT g, gen_random_bytes(1024) FROM generate_series(1, 40000) g;",
        dbname,
    )
    key, value = connection_env("postgres_e2e", pg_server, dbname)
    monkeypatch.setenv(key, value)
    storage = small_disk / "backups"
    write_spec(opsdag_env, backup={"storage": str(storage)})

    with SlackRecorder() as slack:
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_E2E", slack.connection_json())
        dag = runpy.run_path(str(airflow_home / "dags" / "opsdag_databases.py"))["backup__e2e-db"]
        dag.get_task("backup").retry_delay = timedelta(seconds=1)  # its retry (1 min) fails the same way
        result = run_dag(dag)
        [message] = slack.wait_for(1)

    assert result.state == "failed"
    assert result.states["preflight"] == "success", result.states  # the estimate fitted
    assert result.states["backup"] == "failed" and result.states["notify"] == "failed"
    [backup_ti] = [ti for ti in result.dagrun.get_task_instances() if ti.task_id == "backup"]
    assert backup_ti.try_number == 2  # retried once, refused again: a full disk stays full
    assert "FAILED" in message["text"] and "`backup`" in message["text"]
    assert f"the storage file://{storage} refused the write (No space left on device)" in message["text"]
    assert BackupStore(storage).list_backups("e2e-db") == []
    leftovers = sorted(str(p.relative_to(storage)) for p in storage.rglob("*"))
    assert leftovers == ["e2e-db"], leftovers  # no .partial-* directory, no temp file

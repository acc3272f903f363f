# ruff: noqa: F811  (pytest fixtures imported from a helper module are redefined as arguments)
"""Fixtures for the backup and drill DAG tests (imported by test_backup_dag.py / test_drill_dag.py).

Not a ``conftest.py``: the modules import what they need, so the release tests' session
fixtures (the whole sandbox) are not started for these. What they need:

- ``airflow_home`` (module): a fresh AIRFLOW_HOME (``support.airflow_home``: a copy of a SQLite
  metadata DB migrated once per session by ``migrated_airflow_db``) and a DAGs folder holding
  ``opsdag_databases.py``, which builds ``backup__``/``drill__`` DAGs from the specs in
  ``$OPSDAG_INCLUDE_DIR`` (``dag.test()`` runs DAGs its DAG processor knows). Its settings are
  in ``os.environ`` only during the module.
- ``pg_server``, ``make_db`` from tests/integration/pg_fixtures.py (a real PostgreSQL 15).
- ``opsdag_env``: per test, a state dir (backups, reports, scratch), an include dir, and the
  ``AIRFLOW_CONN_*`` of the source and drill-target connections.
- ``write_spec`` / ``build`` / ``run_dag``: write a database spec, build its DAGs, run one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from pg_fixtures import connection_env, make_db, pg_server  # noqa: F401
from support.airflow_home import airflow_home as temporary_airflow_home
from support.airflow_home import migrate

DAG_FILE = '''
"""Airflow test DAGs: backup__/drill__ of every spec in $OPSDAG_INCLUDE_DIR/databases.

(Airflow parses only files that mention both "airflow" and "dag".)
"""
from opsdag.factory.backup_dag import backup_dag
from opsdag.factory.drill_dag import drill_dag
from opsdag.paths import include_dir
from opsdag.spec.loader import load_kind

for _spec in load_kind(include_dir(), "databases").specs.values():
    for _dag in (backup_dag(_spec), drill_dag(_spec)):
        if _dag is not None:
            globals()[_dag.dag_id] = _dag
'''


@pytest.fixture(scope="session")
def migrated_airflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated SQLite metadata DB, made once per session (this process's env untouched)."""
    return migrate(tmp_path_factory.mktemp("airflow-template"))


@pytest.fixture(scope="module")
def airflow_home(migrated_airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh AIRFLOW_HOME for one test module (a copy of the migrated DB), set in ``os.environ``
    for the module's tests and restored afterwards, so other modules' Airflow settings are untouched."""
    home = tmp_path_factory.mktemp("airflow-home")
    with temporary_airflow_home(home, migrated_airflow_db, {"opsdag_databases.py": DAG_FILE}):
        yield home


@dataclass
class OpsdagEnv:
    root: Path
    include: Path
    state: Path
    dbname: str

    @property
    def backups(self) -> Path:
        return self.state / "backups"

    @property
    def reports(self) -> Path:
        return self.state / "reports"


@pytest.fixture
def opsdag_env(
    airflow_home: Path,
    pg_server,
    make_db,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> OpsdagEnv:
    include = tmp_path / "include"
    (include / "databases").mkdir(parents=True)
    state = tmp_path / "state"
    monkeypatch.setenv("OPSDAG_INCLUDE_DIR", str(include))
    monkeypatch.setenv("OPSDAG_STATE_DIR", str(state))
    monkeypatch.setenv("OPSDAG_BACKUPS_DIR", str(state / "backups"))
    monkeypatch.setenv("OPSDAG_REPORTS_DIR", str(state / "reports"))
    dbname = make_db()
    for conn_id, db, extra in (
        ("postgres_e2e", dbname, None),
        ("postgres_e2e_drill", "postgres", {"opsdag_drill_target": True}),
        ("postgres_e2e_unmarked", "postgres", None),
        ("postgres_e2e_source_as_target", dbname, {"opsdag_drill_target": True}),
    ):
        key, value = connection_env(conn_id, pg_server, db, extra)
        monkeypatch.setenv(key, value)
    return OpsdagEnv(tmp_path, include, state, dbname)


def spec_data(name: str = "e2e-db", **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "description": "e2e test database",
        "owners": ["tests"],
        "connection_id": "postgres_e2e",
        "backup": {"method": "logical", "schedule": "0 2 * * *", "jobs": 2, "compression": "gzip"},
        "retention": {"keep_last": 2, "daily": 0, "weekly": 0, "monthly": 0},
        "drill": {
            "schedule": "@weekly",
            "target_conn_id": "postgres_e2e_drill",
            "checks": [
                {"name": "orders-present", "sql": "select count(*) > 0 from orders", "expect": True},
                {"name": "customers", "sql": "select count(*) from customers", "expect": 300},
            ],
        },
        "objectives": {"rto": "15m", "rpo": "1h"},
        "notifications": {"slack_conn_id": "slack_e2e"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def write_spec(env: OpsdagEnv, **overrides: Any):
    """Write ``include/databases/<name>.yaml`` and return the validated spec."""
    from opsdag.spec.database import DatabaseSpec
    from opsdag.spec.loader import load_file

    data = spec_data(**overrides)
    path = env.include / "databases" / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    spec, errors = load_file(path, DatabaseSpec)
    assert not errors, errors
    return spec


@dataclass
class RunResult:
    dagrun: Any
    states: dict[str, str]
    xcoms: dict[str, Any]

    @property
    def state(self) -> str:
        return str(self.dagrun.state)


def run_dag(dag: Any, conf: dict[str, Any] | None = None) -> RunResult:
    """``dag.test()`` in this process; the run, its task states and XComs ``{task_id.key: value}``."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    dagrun = dag.test(run_conf=conf or {})
    states = {ti.task_id: str(ti.state) for ti in dagrun.get_task_instances()}
    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=dagrun.run_id, dag_ids=dag.dag_id)).all()
        xcoms = {f"{row.task_id}.{row.key}": XComModel.deserialize_value(row) for row in rows}
    return RunResult(dagrun, states, xcoms)


def fake_tool_dir(tmp_path: Path, broken: dict[str, str]) -> Path:
    """A PostgreSQL bin dir of links to the real tools, with ``broken`` ones replaced by a
    shell script (name -> script body). Used through ``OPSDAG_PG_BIN`` to make a tool fail."""
    from opsdag.backups.pg import pg_tool

    real = Path(pg_tool("pg_dump")).parent
    fake = tmp_path / "pgbin"
    fake.mkdir()
    for tool in real.iterdir():
        (fake / tool.name).symlink_to(tool)
    for name, body in broken.items():
        (fake / name).unlink(missing_ok=True)
        script = fake / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    return fake


Builder = Callable[..., Any]

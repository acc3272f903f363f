"""A throwaway Airflow: a migrated SQLite metadata DB in a temporary AIRFLOW_HOME.

``dag.test()`` needs a metadata database and runs DAGs its DAG processor knows (files in
the DAGs folder). Migrating a database takes seconds, so a test session migrates one
template (``migrate``) and each user copies it (``airflow_home``)::

    template = migrate(tmp_path_factory.mktemp("airflow-template"))
    with airflow_home(tmp_path_factory.mktemp("airflow-home"), template, {"my_dags.py": SOURCE}) as home:
        dag = runpy.run_path(str(home / "dags" / "my_dags.py"))["my_dag"]
        dag.test()

Inside the block the settings are in ``os.environ`` (so subprocesses see them too) and
Airflow's ORM is reconfigured for them (Airflow may have been imported before); after it,
the environment is restored and the ORM reconfigured again, so other tests' Airflow
settings are untouched. Also used by the benchmarks in bench/ (``airflow_settings``,
``migrate``, ``reconfigure_airflow``, ``postgres_connection``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opsdag.dev.sandbox.postgres import PostgresServer

AIRFLOW = Path(sys.executable).with_name("airflow")


def airflow_settings(home: Path) -> dict[str, str]:
    """The environment of an Airflow whose home, SQLite DB, DAGs and logs are all in ``home``."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }


def migrate(home: Path) -> Path:
    """``airflow db migrate`` of ``home/airflow.db`` (the settings go to the subprocess only,
    this process's environment is untouched); the database's path."""
    (home / "dags").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **airflow_settings(home)}
    migrated = subprocess.run(
        [str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300
    )
    assert migrated.returncode == 0, migrated.stdout[-2000:] + migrated.stderr[-2000:]
    return home / "airflow.db"


def reconfigure_airflow() -> None:
    """Make an already imported Airflow use the settings now in ``os.environ``."""
    from airflow import settings

    settings.configure_vars()
    settings.reconfigure_orm()


@contextmanager
def airflow_home(home: Path, template_db: Path, dags: Mapping[str, str] | None = None) -> Iterator[Path]:
    """``home`` as AIRFLOW_HOME for the block: a copy of ``template_db`` (from ``migrate``) and a
    DAGs folder holding ``dags`` (file name -> source); the environment and ORM restored after."""
    (home / "dags").mkdir(parents=True, exist_ok=True)
    for name, source in (dags or {}).items():
        (home / "dags" / name).write_text(source)
    shutil.copy2(template_db, home / "airflow.db")
    env = airflow_settings(home)
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    reconfigure_airflow()
    try:
        yield home
    finally:
        from airflow import settings

        settings.dispose_orm()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reconfigure_airflow()


def postgres_connection(server: PostgresServer, dbname: str, extra: dict[str, Any] | None = None) -> str:
    """The JSON of an Airflow connection (``AIRFLOW_CONN_<ID>``) to database ``dbname`` of an
    ``opsdag.dev.sandbox.postgres.PostgresServer``, as its superuser (``extra`` as given)."""
    conn: dict[str, Any] = {
        "conn_type": "postgres",
        "host": server.host,
        "port": server.port,
        "login": server.superuser,
        "password": server.password,
        "schema": dbname,
    }
    if extra:
        conn["extra"] = extra
    return json.dumps(conn)

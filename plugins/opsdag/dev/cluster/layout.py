"""Where the local cluster keeps its state, and its two servers (layout of ``<state>/cluster``).

::

    postgres/ redis/           the metadata database and the broker
    airflow/                   AIRFLOW_HOME (task logs under airflow/logs)
    secrets/                   one 0600 file per secret setting
    run/ logs/                 pidfiles and each process's own log
    cluster.json               ports chosen at the first start of the running cluster
    api-credentials.json       {"url", "username", "password"} for the REST client (0600)
"""

from __future__ import annotations

import json
from pathlib import Path

from opsdag import paths
from opsdag.airflow_api import Credentials
from opsdag.dev.cluster import topology
from opsdag.dev.cluster.redis_server import RedisServer
from opsdag.dev.sandbox.postgres import PostgresServer
from opsdag.dev.sandbox.processes import ProcessTable

USER = "admin"
DATABASE = "airflow"


def home() -> Path:
    return paths.state_dir() / "cluster"


def credentials_path() -> Path:
    return home() / "api-credentials.json"


def passwords_file() -> Path:
    return home() / "simple_auth_manager_passwords.json"


def table() -> ProcessTable:
    return ProcessTable(home() / "run", home() / "logs")


def postgres() -> PostgresServer:
    # Two schedulers, a DAG processor, a triggerer, the API server and 8 task slots each keep
    # a pool of connections: more than PostgreSQL's default 100.
    return PostgresServer(home() / "postgres", settings={"max_connections": 300})


def redis() -> RedisServer:
    return RedisServer(home() / "redis", table())


def running(name: str) -> bool:
    record = table().read(name)
    return record is not None and ProcessTable.alive(record)


def anythingrunning() -> bool:
    return any(running(c.name) for c in topology.COMPONENTS) or redis().running() or postgres().running()


# -- settings --------------------------------------------------------------------------


def credentials() -> Credentials:
    data = json.loads(credentials_path().read_text())
    return Credentials(data["url"], data["username"], data["password"])

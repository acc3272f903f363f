"""What the local Airflow cluster is made of: its components, their commands and settings.

Pure data, so that ``docker-compose.yaml`` (the container form of the same topology) can be
checked against it without starting anything (tests/unit/test_compose.py). The cluster is
Airflow's Celery layout as separate processes on loopback: a PostgreSQL metadata database,
a Redis broker, one API server, **two** schedulers (Airflow's HA mode: row locks in
PostgreSQL share the work), a DAG processor, a triggerer and **two** Celery workers.

Ports a component listens on (a scheduler's health check, a worker's log server) are given
per process so that two of a kind fit on one machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Component:
    """One Airflow process of the cluster: its name, ``airflow`` sub-command and own settings."""

    name: str
    command: tuple[str, ...]
    role: str  # the compose service it corresponds to
    ports: tuple[str, ...] = field(default=())  # AIRFLOW__ settings that take a free port each


SCHEDULERS = ("scheduler-1", "scheduler-2")
SCHEDULER_HEALTH_PORT = "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT"
TRIGGER_LOG_PORT = "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"
WORKER_LOG_PORT = "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"
WORKERS = ("worker-1", "worker-2")

COMPONENTS: tuple[Component, ...] = (
    Component("api-server", ("api-server",), "airflow-apiserver"),
    *(Component(name, ("scheduler",), "airflow-scheduler", (SCHEDULER_HEALTH_PORT,)) for name in SCHEDULERS),
    Component("dag-processor", ("dag-processor",), "airflow-dag-processor"),
    Component("triggerer", ("triggerer",), "airflow-triggerer", (TRIGGER_LOG_PORT,)),
    *(
        Component(
            name,
            # Each worker is its own Celery node (a host name of its own); 4 task slots each.
            ("celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency", "4"),
            "airflow-worker",
            (WORKER_LOG_PORT,),
        )
        for name in WORKERS
    ),
)

# The servers Airflow depends on, by the compose service names they correspond to.
SERVERS = {"postgres": "postgres", "redis": "redis"}

# Settings every component shares, with the same values as docker-compose.yaml.
SHARED_SETTINGS = {
    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
    # apache/airflow#67287: see opsdag.dev.airflow_env
    "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.1",  # see opsdag.dev.airflow_env
}

# Settings of the cluster that the compose file sets differently, and why.
CLUSTER_ONLY_SETTINGS = {
    # As scripts/airflow: opsdag's DAGs run as soon as they are parsed (compose keeps
    # Airflow's production default, paused).
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
    # A worker killed with its tasks is noticed in 30 s, not Airflow's default 5 minutes, and
    # a dead scheduler's queued tasks are adopted by the other one within 15 s.
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "15",
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "15",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
    "AIRFLOW__CORE__PARALLELISM": "16",
}

# Secrets and addresses: set in both, but from generated files here and from .env there.
SECRET_SETTINGS = (
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
)


def component(name: str) -> Component:
    for item in COMPONENTS:
        if item.name == name:
            return item
    raise KeyError(f"no cluster component {name!r}; there are {', '.join(c.name for c in COMPONENTS)}")


def roles() -> set[str]:
    """The compose services this topology corresponds to."""
    return {c.role for c in COMPONENTS} | set(SERVERS.values())

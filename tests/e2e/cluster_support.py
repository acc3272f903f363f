"""The local Celery cluster for the cluster tests, and what they check after each fault.

``cluster`` (module fixture): ``scripts/cluster``'s Airflow (PostgreSQL, Redis, API server,
two schedulers, DAG processor, triggerer, two Celery workers) in a state directory of its
own, started after the session's sandbox so that it sees its connections, with a copy of
the e2e specs (short bakes) and a local Slack recorder for notifications.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.slack_server import SlackRecorder
from support.waiting import wait_for

from opsdag.airflow_api import AirflowClient, Credentials
from opsdag.dev.cluster import control, process_tree
from opsdag.dev.sandbox.wal_archiving import archive_root

RELEASE = "release__demo-api"
KEYS = (
    "OPSDAG_STATE_DIR",
    "OPSDAG_INCLUDE_DIR",
    "OPSDAG_SANDBOX_DIR",
    "OPSDAG_REPORTS_DIR",
    "OPSDAG_BACKUPS_DIR",
)


@dataclass
class Cluster:
    credentials: Credentials
    slack: SlackRecorder
    state: Path
    backups: Path

    def client(self) -> AirflowClient:
        return AirflowClient(self.credentials)

    def release(self, image: str, **conf: Any) -> str:
        with self.client() as client:
            return client.trigger(RELEASE, {"image": image, **conf})["dag_run_id"]

    def wait_end(self, dag_id: str, run_id: str, timeout: float = 300) -> dict[str, Any]:
        with self.client() as client:
            return wait_for(
                lambda: (run := client.dag_run(dag_id, run_id))["state"] in ("success", "failed") and run,
                timeout,
                interval=1.0,
                what=f"{dag_id} {run_id} ended",
            )

    def tasks(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        with self.client() as client:
            return {ti["task_id"]: ti for ti in client.task_instances(dag_id, run_id)}

    def restart_missing(self) -> None:
        """``scripts/cluster up`` again: starts what a test killed, waits until all is ready."""
        control.up(progress=lambda _m: None, timeout=300)

    def component_of(self, pid: int) -> str | None:
        """The cluster component whose process tree holds ``pid``."""
        return control.owner_of(pid)


@pytest.fixture(scope="module")
def cluster(e2e_include: Path, sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    state = tmp_path_factory.mktemp("cluster-state")
    include = state / "include"
    shutil.copytree(e2e_include, include)
    db_spec = include / "databases" / "demo-db.yaml"
    spec = yaml.safe_load(db_spec.read_text())
    spec["notifications"]["slack_conn_id"] = "slack_e2e"
    db_spec.write_text(yaml.safe_dump(spec, sort_keys=False))
    values = {
        "OPSDAG_STATE_DIR": str(state),
        "OPSDAG_INCLUDE_DIR": str(include),
        "OPSDAG_SANDBOX_DIR": str(sandbox.root),
        "OPSDAG_REPORTS_DIR": str(state / "reports"),
        # where the session's sandbox archives the demo database's WAL: the cluster's backups
        # must be there too, for the backup DAG's WAL continuity check
        "OPSDAG_BACKUPS_DIR": str(archive_root(sandbox.layout)),
    }
    saved = {k: os.environ.get(k) for k in (*KEYS, "AIRFLOW_CONN_SLACK_E2E")}
    with SlackRecorder() as slack:
        os.environ.update(values)
        os.environ["AIRFLOW_CONN_SLACK_E2E"] = slack.connection_json()
        try:
            credentials = control.up(progress=lambda _m: None, timeout=400)
            yield Cluster(credentials, slack, state, Path(values["OPSDAG_BACKUPS_DIR"]))
        finally:
            started = [r.pid for r in control.table().records()]
            control.down(progress=lambda _m: None)
            left = [pid for pid in started if process_tree.alive(pid)]
            assert not left, f"scripts/cluster down left processes running: {left}"
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def assert_stable_only(sandbox, version: str) -> None:
    """``version`` is stable with all the traffic; no canary; no weight on a server that is down."""
    status = sandbox.status()
    assert status["stable"]["version"] == version, status["stable"]
    assert status["canary"] is None, status["canary"]
    traffic = status["traffic"]
    assert traffic["configured"]["stable"] == 100, traffic
    for name, server in traffic["haproxy_servers"].items():
        if server["weight"] > 0:
            assert (server["status"] or "").startswith("UP"), (name, server)


def wait_task_state(cluster: Cluster, run_id: str, task_id: str, state: str, timeout: float = 180) -> dict:
    """Poll until ``task_id`` of the release run is in ``state`` (its task instance)."""

    def reached() -> dict | None:
        ti = cluster.tasks(RELEASE, run_id).get(task_id)
        return ti if ti and ti["state"] == state else None

    return wait_for(reached, timeout, interval=0.2, what=f"{task_id} {state}")


def tries(cluster: Cluster, run_id: str) -> dict[str, int]:
    """Each task's try number (0: never ran), for 'no step ran twice'."""
    return {task_id: ti["try_number"] for task_id, ti in cluster.tasks(RELEASE, run_id).items()}

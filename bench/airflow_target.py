"""The Airflow the release bench's REST runs go to: ``airflow standalone`` or the local cluster.

- ``standalone``: opsdag.dev.standalone (LocalExecutor, SQLite, one scheduler; its home in
  ``<state>/airflow``, all its processes logging to ``airflow-standalone.log``);
- ``cluster``: opsdag.dev.cluster (CeleryExecutor, PostgreSQL, Redis, two schedulers, a
  triggerer, two Celery workers; its home in ``<state>/cluster/airflow``, one log per process
  in ``<state>/cluster/logs``).

Both are started after the sandbox (their processes read its connections when they start)
and stopped through their own ``stop``/``down``, by the process groups they recorded.
What differs for the bench: how to start and stop, where the task and trigger logs are,
which logs hold the scheduler's messages, what to keep, and the settings to write down.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HEARTBEAT = "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL"


@dataclass(frozen=True)
class Target:
    name: str
    result_file: str  # in bench/results
    logs_dir: str  # under .state/bench: Airflow's logs, the reports and the sandbox's logs, kept
    start_timeout_s: float

    # -- start and stop --------------------------------------------------------------------

    def start(self, progress: Callable[[str], None]):
        """Start it and return its REST credentials once it is ready for the release DAGs."""
        if self.name == "cluster":
            from opsdag.dev.cluster import control

            return control.up(progress=progress, timeout=self.start_timeout_s)
        from opsdag.dev import standalone

        return standalone.start(progress=progress, timeout=self.start_timeout_s)

    def stop(self, progress: Callable[[str], None]) -> None:
        if self.name == "cluster":
            from opsdag.dev.cluster import control
            from opsdag.dev.sandbox.pg_relocation import remove_relocated

            control.down(progress=progress)
            # The metadata database's data, if it had to live outside the temporary directory.
            remove_relocated(control.home() / "postgres")
            return
        from opsdag.dev import standalone

        standalone.stop(progress=progress)

    # -- where things are ------------------------------------------------------------------

    def airflow_home(self) -> Path:
        from opsdag import paths

        if self.name == "cluster":
            return paths.state_dir() / "cluster" / "airflow"
        return paths.state_dir() / "airflow"

    def scheduler_logs(self) -> list[Path]:
        """The log files that hold the schedulers' messages."""
        if self.name == "cluster":
            from opsdag.dev.cluster import control, topology

            return [control.table().log_path(name) for name in topology.SCHEDULERS]
        return [self.airflow_home() / "logs" / "airflow-standalone.log"]

    def kept_parts(self) -> tuple[str, ...]:
        """What keep_logs copies, relative to the bench's temporary directory."""
        if self.name == "cluster":
            return ("state/cluster/airflow/logs", "state/cluster/logs", "state/reports", "sandbox/logs")
        return ("state/airflow/logs", "state/reports", "sandbox/logs")

    def describe(self) -> dict[str, Any]:
        """How it runs Airflow, for the result's settings."""
        from opsdag.dev.airflow_env import airflow_environment

        if self.name == "cluster":
            from opsdag.dev.cluster import topology

            settings = {**topology.SHARED_SETTINGS, **topology.CLUSTER_ONLY_SETTINGS}
            return {
                "target": "cluster (opsdag.dev.cluster, scripts/cluster)",
                "executor": settings["AIRFLOW__CORE__EXECUTOR"],
                "metadata_db": "PostgreSQL",
                "broker": "Redis",
                "processes": [" ".join(c.command[:2]) + f" ({c.name})" for c in topology.COMPONENTS],
                "settings": settings,
                "min_heartbeat_interval_s": float(settings.get(HEARTBEAT, 5)),
            }
        heartbeat = airflow_environment().get(HEARTBEAT, os.environ.get(HEARTBEAT, "5"))
        return {
            "target": "airflow standalone (opsdag.dev.standalone)",
            "executor": "LocalExecutor",
            "metadata_db": "SQLite",
            "processes": ["airflow standalone (scheduler, dag-processor, triggerer, api-server)"],
            "settings": {"AIRFLOW__CORE__PARALLELISM": "8", HEARTBEAT: heartbeat},
            "min_heartbeat_interval_s": float(heartbeat),
        }


TARGETS = {
    "standalone": Target("standalone", "release.json", "release", 420),
    "cluster": Target("cluster", "release_cluster.json", "release_cluster", 600),
}


# -- what the bench reads from Airflow's logs ------------------------------------------------


def trigger_events(target: Target, dag: str, run_id: str, task_id: str) -> dict[int, dict]:
    """The event each try's trigger fired (by try number), from the triggerer's log of that task."""
    folder = target.airflow_home() / "logs" / f"dag_id={dag}" / f"run_id={run_id}" / f"task_id={task_id}"
    events = {}
    for path in sorted(folder.glob("attempt=*.log.trigger.*.log")):
        attempt = int(path.name.split("=", 1)[1].split(".", 1)[0])
        for line in path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            result = str(entry.get("result") or "")
            if entry.get("event") == "Trigger fired event" and result.startswith("TriggerEvent<"):
                try:
                    events[attempt] = ast.literal_eval(result.removeprefix("TriggerEvent<").removesuffix(">"))
                except (ValueError, SyntaxError):
                    continue
    return events


def state_mismatches(target: Target, dag: str, run_id: str) -> list[str]:
    """Tasks of ``run_id`` a scheduler failed as 'task-state-changed-externally' (from its log)."""
    pattern = re.compile(rf"<TaskInstance: {re.escape(dag)}\.(\S+) {re.escape(run_id)} \[(\w+)\]")
    found = []
    for log_file in target.scheduler_logs():
        if not log_file.exists():
            continue
        with open(log_file, errors="replace") as lines:
            for line in lines:
                if "task-state-changed-externally" in line and (m := pattern.search(line)):
                    found.append(f"{m.group(1)} (was {m.group(2)})")
    return list(dict.fromkeys(found))


def mismatch_events(client, dag: str, run_id: str) -> list[str]:
    """The same tasks from the 'state mismatch' entries of Airflow's event log (any scheduler, REST)."""
    from opsdag.airflow_api import AirflowApiError

    params = {"dag_id": dag, "run_id": run_id, "event": "state mismatch", "limit": 100}
    try:
        entries = client.request("GET", "/eventLogs", params=params).get("event_logs", [])
    except AirflowApiError:
        return []
    found = []
    for entry in entries:
        m = re.search(r"state attribute is (\w+)", entry.get("extra") or "")
        found.append(f"{entry.get('task_id')} (was {m.group(1) if m else '?'})")
    return found


def keep_logs(target: Target, tmp_path: Path, logs: Path, log: Callable[[str], None]) -> None:
    """Airflow's logs, the reports and the sandbox's logs, kept in ``logs`` (the temp dir goes)."""
    shutil.rmtree(logs, ignore_errors=True)
    for part in target.kept_parts():
        if (tmp_path / part).is_dir():
            shutil.copytree(tmp_path / part, logs / part, ignore_dangling_symlinks=True)
    log(f"logs and reports kept in {logs}")

"""What the backup and drill benchmarks share (bench_backup.py, bench_drill.py).

A PostgreSQL server with a pgbench database and an Airflow home in ``--workdir`` (kept
between runs), running the ``backup__``/``drill__`` DAGs with ``dag.test()``; rounds of
measurements, each after a CHECKPOINT, the order alternating between rounds; the result
written to bench/results/<benchmark>.json.

The Airflow settings and connections come from tests/support/airflow_home.py, the same
ones the tests use.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import runpy
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT / "tests"))
RESULTS = ROOT / "bench" / "results"

from support.airflow_home import (  # noqa: E402
    airflow_settings,
    migrate,
    postgres_connection,
    reconfigure_airflow,
)

DAG_FILE = '''"""Airflow DAGs of the benchmark: backup__/drill__ of the specs in $OPSDAG_INCLUDE_DIR."""
from opsdag.factory.backup_dag import backup_dag
from opsdag.factory.drill_dag import drill_dag
from opsdag.paths import include_dir
from opsdag.spec.loader import load_kind

for _spec in load_kind(include_dir(), "databases").specs.values():
    for _dag in (backup_dag(_spec), drill_dag(_spec)):
        if _dag is not None:
            globals()[_dag.dag_id] = _dag
'''

RUNNER = (
    "Airflow dag.test() (Task SDK in-process runner); median of the rounds, "
    "each measurement after a CHECKPOINT, order alternating between rounds"
)


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options both benchmarks take (--rounds, --scale, --jobs, --workdir)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=int, default=70)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".state" / "bench" / "pg")
    return parser


def prepare(args: argparse.Namespace) -> tuple[Any, int, Path]:
    """The server (started), the pgbench database's size in bytes, and the benchmark's DAG file."""
    server = pgbench_server(args.workdir, args.scale)
    return server, database_bytes(server), airflow_setup(args.workdir, server)


# -- PostgreSQL with a pgbench database -------------------------------------------------------


def pgbench_server(workdir: Path, scale: int, settings: dict[str, str] | None = None):
    """A server in ``workdir/server`` holding database ``bench`` at pgbench ``scale`` (made once);
    ``settings`` are added to its postgresql.conf (e.g. WAL archiving)."""
    from opsdag.dev.sandbox.postgres import PostgresServer

    base = {"max_wal_size": "4GB", "shared_buffers": "256MB", "maintenance_work_mem": "256MB"}
    server = PostgresServer(workdir / "server", settings={**base, **(settings or {})}).start()
    have = ""
    if server.psql("SELECT 1 FROM pg_database WHERE datname = 'bench';").strip():
        have = server.psql(
            "SELECT CASE WHEN to_regclass('pgbench_branches') IS NULL THEN 0 "
            "ELSE (SELECT count(*) FROM pgbench_branches) END;",
            "bench",
        ).strip()
    if have != str(scale):
        log(f"creating the pgbench database at scale {scale} (about {scale * 15} MB)")
        server.psql("DROP DATABASE IF EXISTS bench;")
        server.create_database("bench")
        started = time.monotonic()
        subprocess.run(
            [server.bin("pgbench"), "-i", "-q", "-s", str(scale), "bench"],
            env={**os.environ, **server.env("bench")},
            check=True,
            capture_output=True,
        )
        server.psql("VACUUM ANALYZE;", "bench")
        log(f"pgbench -i took {time.monotonic() - started:.1f} s")
    return server


def database_bytes(server, dbname: str = "bench") -> int:
    return int(server.psql(f"SELECT pg_database_size('{dbname}');").strip())


# -- Airflow --------------------------------------------------------------------------------


def airflow_setup(workdir: Path, server) -> Path:
    """AIRFLOW_HOME, the opsdag state/include dirs and connections, in this process's env."""
    home = workdir / "airflow"
    include = workdir / "include"
    (home / "dags").mkdir(parents=True, exist_ok=True)
    (include / "databases").mkdir(parents=True, exist_ok=True)
    (home / "dags" / "opsdag_bench.py").write_text(DAG_FILE)
    os.environ.update(
        {
            **airflow_settings(home),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "OPSDAG_INCLUDE_DIR": str(include),
            "OPSDAG_STATE_DIR": str(workdir / "state"),
            "OPSDAG_BACKUPS_DIR": str(workdir / "state" / "backups"),
            "OPSDAG_REPORTS_DIR": str(workdir / "state" / "reports"),
            "AIRFLOW_CONN_BENCH_PG": postgres_connection(server, "bench"),
            "AIRFLOW_CONN_BENCH_DRILL": postgres_connection(
                server, "postgres", {"opsdag_drill_target": True}
            ),
        }
    )
    if not (home / "airflow.db").exists():
        log("migrating the Airflow metadata database")
        migrate(home)
    reconfigure_airflow()
    return home / "dags" / "opsdag_bench.py"


def write_spec(
    name: str,
    *,
    checksums: bool = True,
    jobs: int = 2,
    level: int = 6,
    rto: str = "1h",
    method: str = "logical",
    compression: str = "gzip",
) -> None:
    import yaml

    spec = {
        "name": name,
        "description": "benchmark database (pgbench)",
        "owners": ["bench"],
        "connection_id": "bench_pg",
        "backup": {
            "method": method,
            "schedule": "@daily",
            "jobs": jobs,
            "compression": compression,
            "compression_level": level,
            "table_checksums": checksums,
        },
        "retention": {"keep_last": 1, "daily": 0, "weekly": 0, "monthly": 0},
        # the bench runs its drills itself: none started by a backup behind its back
        "drill": {
            "schedule": "@weekly",
            "on_new_backup": False,
            "target_conn_id": "bench_drill",
            "jobs": jobs,
        },
        "objectives": {"rto": rto, "rpo": "1d"},
        "notifications": {"on_success": False},
    }
    path = Path(os.environ["OPSDAG_INCLUDE_DIR"]) / "databases" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def run_dag(dag_file: Path, dag_id: str) -> dict[str, Any]:
    """One ``dag.test()`` run: state, wall time, each task's recorded duration, XComs."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    dag = runpy.run_path(str(dag_file))[dag_id]  # a fresh DAG object for every run
    started = time.monotonic()
    dagrun = dag.test()
    wall = time.monotonic() - started
    tasks = {
        ti.task_id: {
            "state": str(ti.state),
            "seconds": round((ti.end_date - ti.start_date).total_seconds(), 3)
            if ti.start_date and ti.end_date
            else None,
        }
        for ti in dagrun.get_task_instances()
    }
    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=dagrun.run_id, dag_ids=dag_id)).all()
        xcoms = {f"{row.task_id}.{row.key}": XComModel.deserialize_value(row) for row in rows}
    return {"state": str(dagrun.state), "wall_seconds": round(wall, 3), "tasks": tasks, "xcoms": xcoms}


# -- the real path: REST-triggered runs on airflow standalone ---------------------------------


def standalone_env(workdir: Path, server) -> None:
    """What ``airflow standalone`` (started after this) reads: the bench's state, specs and connections."""
    import shutil

    include = workdir / "include"
    (include / "databases").mkdir(parents=True, exist_ok=True)
    # standalone counts as ready once release__ DAGs are parsed: the project's services too.
    shutil.copytree(ROOT / "include" / "services", include / "services", dirs_exist_ok=True)
    os.environ.update(
        {
            "OPSDAG_INCLUDE_DIR": str(include),
            "OPSDAG_STATE_DIR": str(workdir / "state"),
            "OPSDAG_BACKUPS_DIR": str(workdir / "state" / "backups"),
            "OPSDAG_REPORTS_DIR": str(workdir / "state" / "reports"),
            "AIRFLOW_CONN_BENCH_PG": postgres_connection(server, "bench"),
            "AIRFLOW_CONN_BENCH_DRILL": postgres_connection(
                server, "postgres", {"opsdag_drill_target": True}
            ),
        }
    )


def rest_run(client, dag_id: str, conf: dict[str, Any] | None = None, timeout: float = 900) -> dict[str, Any]:
    """Trigger ``dag_id`` through ``POST /api/v2/dags/{dag_id}/dagRuns``, wait for its end; its
    state, wall time, each task's start->end from the task instances, and the XComs asked for."""
    started = time.monotonic()
    run_id = client.trigger(dag_id, conf or {})["dag_run_id"]
    while True:
        run = client.dag_run(dag_id, run_id)
        if run["state"] in ("success", "failed"):
            break
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{dag_id} run {run_id} did not end within {timeout:.0f} s")
        time.sleep(0.5)
    tasks = {}
    for ti in client.task_instances(dag_id, run_id):
        start, end = ti.get("start_date"), ti.get("end_date")
        seconds = None
        if start and end:
            seconds = round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 3)
        tasks[ti["task_id"]] = {"state": ti["state"], "seconds": seconds}
    run_seconds = None
    if run.get("start_date") and run.get("end_date"):
        run_seconds = round(
            (
                datetime.fromisoformat(run["end_date"]) - datetime.fromisoformat(run["start_date"])
            ).total_seconds(),
            3,
        )
    return {
        "state": run["state"],
        "run_id": run_id,
        "wall_seconds": round(time.monotonic() - started, 3),
        "run_seconds": run_seconds,
        "tasks": tasks,
        "xcom": lambda task_id, key="return_value": client.xcom(dag_id, run_id, task_id, key),
    }


# -- rounds and results ---------------------------------------------------------------------


def measure_round(server, n: int, steps: list[tuple[str, Callable[[], Any]]]) -> dict[str, Any]:
    """Round ``n`` (from 0): each step's result by name. Every measurement starts after a
    CHECKPOINT; the order alternates between rounds."""
    measured: dict[str, Any] = {}
    for name, step in steps if n % 2 == 0 else list(reversed(steps)):
        server.psql("CHECKPOINT;")
        measured[name] = step()
    return measured


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def orchestration_overhead(
    what: str, rounds: list[dict[str, Any]], task: str, inner: str, by_hand: float
) -> dict:
    """The time a task spends around its tool: median of ``task - inner`` seconds over the rounds."""
    seconds = median([r[task] - r[inner] for r in rounds])
    return {"what": what, "median_seconds": seconds, "share_of_by_hand": round(seconds / by_hand, 4)}


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "load_average_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
        "note": "shared machine: other work may run at the same time (see the load average)",
    }


def write_result(
    benchmark: str,
    *,
    database: dict[str, Any],
    command: str,
    rounds: list[dict[str, Any]],
    medians: dict[str, Any],
    orchestration: dict[str, Any],
    ratio: dict[str, Any],
    target: str,
    runner: str = RUNNER,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write bench/results/<benchmark>.json, print its summary; the result."""
    result = {
        "benchmark": benchmark,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "database": database,
        "command": command,
        "runner": runner,
        **(extra or {}),
        "rounds": rounds,
        "median": medians,
        "orchestration": orchestration,
        "ratio": ratio,
        "target": target,
    }
    path = RESULTS / f"{benchmark}.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("database", "median", "orchestration", "ratio")}, indent=2))
    log(f"written to {path}")
    return result

"""Backup of a 1 GB pgbench database: the backup DAG's task against the same pg_dump by hand.

Side by side, interleaved, in one run: ``pg_dump --format=directory --jobs=2
--compress=6`` run by hand, and the ``backup`` task of ``backup__bench`` run by Airflow
(``dag.test()``, the Task SDK's in-process runner) with the same options; then the
``verify`` task. The backup task also takes per-table row counts and checksums in the
dump's snapshot, so it runs twice: with checksums (the default) and with row counts only.
The figure is the ratio backup task / by hand (target: orchestration adds < 10 %).

The PostgreSQL server and the pgbench database (scale 70, about 1,054 MB) are kept in
``--workdir`` (default .state/bench/pg) between runs. Prints and writes
bench/results/backup.json.

    .venv/bin/python bench/bench_backup.py [--rounds 3] [--scale 70]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import runpy
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
RESULTS = ROOT / "bench" / "results"

DAG_FILE = '''"""Airflow DAGs of the benchmark: backup__/drill__ of the specs in $OPSDAG_INCLUDE_DIR."""
from opsdag.factory.backup import backup_dag
from opsdag.factory.drill import drill_dag
from opsdag.paths import include_dir
from opsdag.spec.loader import load_kind

for _spec in load_kind(include_dir(), "databases").specs.values():
    for _dag in (backup_dag(_spec), drill_dag(_spec)):
        if _dag is not None:
            globals()[_dag.dag_id] = _dag
'''


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


# -- PostgreSQL with a pgbench database -------------------------------------------------------


def pgbench_server(workdir: Path, scale: int):
    """A server in ``workdir/server`` holding database ``bench`` at pgbench ``scale`` (made once)."""
    from opsdag.sandbox.postgres import PostgresServer

    settings = {"max_wal_size": "4GB", "shared_buffers": "256MB", "maintenance_work_mem": "256MB"}
    server = PostgresServer(workdir / "server", settings=settings).start()
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


def connection(server, dbname: str, extra: dict[str, Any] | None = None) -> str:
    conn = {
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
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "OPSDAG_INCLUDE_DIR": str(include),
            "OPSDAG_STATE_DIR": str(workdir / "state"),
            "OPSDAG_BACKUPS_DIR": str(workdir / "state" / "backups"),
            "OPSDAG_REPORTS_DIR": str(workdir / "state" / "reports"),
            "AIRFLOW_CONN_BENCH_PG": connection(server, "bench"),
            "AIRFLOW_CONN_BENCH_DRILL": connection(server, "postgres", {"opsdag_drill_target": True}),
        }
    )
    if not (home / "airflow.db").exists():
        log("migrating the Airflow metadata database")
        airflow = Path(sys.executable).with_name("airflow")
        subprocess.run(
            [str(airflow), "db", "migrate"], env=os.environ.copy(), check=True, capture_output=True
        )
    from airflow import settings

    settings.configure_vars()
    settings.reconfigure_orm()
    return home / "dags" / "opsdag_bench.py"


def write_spec(name: str, *, checksums: bool = True, jobs: int = 2, level: int = 6, rto: str = "1h") -> None:
    import yaml

    spec = {
        "name": name,
        "description": "benchmark database (pgbench)",
        "owners": ["bench"],
        "connection_id": "bench_pg",
        "backup": {
            "method": "logical",
            "schedule": "@daily",
            "jobs": jobs,
            "compression": "gzip",
            "compression_level": level,
            "table_checksums": checksums,
        },
        "retention": {"keep_last": 1, "daily": 0, "weekly": 0, "monthly": 0},
        "drill": {"schedule": "@weekly", "target_conn_id": "bench_drill", "jobs": jobs},
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


# -- by hand --------------------------------------------------------------------------------


def pg_dump_by_hand(server, out_dir: Path, *, jobs: int, level: int) -> float:
    from opsdag.backups.pg import pg_tool

    shutil.rmtree(out_dir, ignore_errors=True)
    argv = [pg_tool("pg_dump", 15), "--format=directory", f"--jobs={jobs}", f"--compress={level}"]
    argv += ["--no-password", f"--file={out_dir}"]
    started = time.monotonic()
    subprocess.run(argv, env={**os.environ, **server.env("bench")}, check=True, capture_output=True)
    seconds = time.monotonic() - started
    shutil.rmtree(out_dir, ignore_errors=True)
    return seconds


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "load_average_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
        "note": "shared machine: other work may run at the same time (see the load average)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=int, default=70)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--level", type=int, default=6)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".state" / "bench" / "pg")
    args = parser.parse_args()

    server = pgbench_server(args.workdir, args.scale)
    size = database_bytes(server)
    dag_file = airflow_setup(args.workdir, server)
    write_spec("bench", checksums=True, jobs=args.jobs, level=args.level)
    write_spec("bench-counts", checksums=False, jobs=args.jobs, level=args.level)
    shutil.rmtree(args.workdir / "state" / "backups", ignore_errors=True)

    log(f"database: {size / 1e6:.0f} MB; warming up (one dump by hand, not counted)")
    pg_dump_by_hand(server, args.workdir / "hand", jobs=args.jobs, level=args.level)

    rounds: list[dict[str, Any]] = []
    for n in range(args.rounds):
        # Every measurement starts after a CHECKPOINT; the order alternates between rounds.
        measured: dict[str, Any] = {}
        steps = [
            (
                "hand",
                lambda: pg_dump_by_hand(server, args.workdir / "hand", jobs=args.jobs, level=args.level),
            ),
            ("full", lambda: run_dag(dag_file, "backup__bench")),
            ("counts", lambda: run_dag(dag_file, "backup__bench-counts")),
        ]
        for name, step in steps if n % 2 == 0 else list(reversed(steps)):
            server.psql("CHECKPOINT;")
            measured[name] = step()
        hand, full, counts = measured["hand"], measured["full"], measured["counts"]
        for run in (full, counts):
            assert run["state"] == "success", run["tasks"]
        inner = full["xcoms"]["backup.return_value"]["timings"]
        record = {
            "round": n + 1,
            "pg_dump_by_hand_seconds": round(hand, 3),
            "backup_task_seconds": full["tasks"]["backup"]["seconds"],
            "backup_task_pg_dump_seconds": inner["dump_seconds"],
            "backup_task_stats_seconds": inner["stats_seconds"],
            "backup_task_counts_only_seconds": counts["tasks"]["backup"]["seconds"],
            "verify_task_seconds": full["tasks"]["verify"]["seconds"],
            "manifest_task_seconds": full["tasks"]["manifest"]["seconds"],
            "dag_run_seconds": full["wall_seconds"],
            "stored_bytes": full["xcoms"]["manifest.return_value"]["bytes"],
            "tasks": {k: v["seconds"] for k, v in full["tasks"].items()},
        }
        rounds.append(record)
        log(
            f"round {n + 1}: by hand {hand:.2f} s | backup task {record['backup_task_seconds']:.2f} s "
            f"(pg_dump inside {inner['dump_seconds']:.2f} s) | counts only "
            f"{record['backup_task_counts_only_seconds']:.2f} s | "
            f"verify {record['verify_task_seconds']:.2f} s"
        )

    hand = median([r["pg_dump_by_hand_seconds"] for r in rounds])
    task = median([r["backup_task_seconds"] for r in rounds])
    counts = median([r["backup_task_counts_only_seconds"] for r in rounds])
    inner = median([r["backup_task_pg_dump_seconds"] for r in rounds])
    result = {
        "benchmark": "backup",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "database": {"pgbench_scale": args.scale, "bytes": size},
        "command": f"pg_dump --format=directory --jobs={args.jobs} --compress={args.level}",
        "runner": "Airflow dag.test() (Task SDK in-process runner); median of the rounds, "
        "each measurement after a CHECKPOINT, order alternating between rounds",
        "rounds": rounds,
        "median": {
            "pg_dump_by_hand_seconds": hand,
            "backup_task_seconds": task,
            "backup_task_counts_only_seconds": counts,
            "backup_task_pg_dump_seconds": inner,
            "verify_task_seconds": median([r["verify_task_seconds"] for r in rounds]),
            "manifest_task_seconds": median([r["manifest_task_seconds"] for r in rounds]),
            "stored_bytes": rounds[-1]["stored_bytes"],
        },
        "orchestration": {
            "what": "backup task wall time minus the pg_dump wall time inside it (opsdag + Airflow around "
            "the tool); the stats scan runs concurrently with pg_dump and shows up as a slower pg_dump",
            "median_seconds": median(
                [r["backup_task_seconds"] - r["backup_task_pg_dump_seconds"] for r in rounds]
            ),
            "share_of_by_hand": round(
                median([r["backup_task_seconds"] - r["backup_task_pg_dump_seconds"] for r in rounds]) / hand,
                4,
            ),
        },
        "ratio": {
            "backup_task_vs_by_hand": round(task / hand, 3),
            "backup_task_counts_only_vs_by_hand": round(counts / hand, 3),
            "pg_dump_inside_task_vs_by_hand": round(inner / hand, 3),
        },
        "target": "backup task / by hand < 1.10",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "backup.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("database", "median", "orchestration", "ratio")}, indent=2))
    log(f"written to {RESULTS / 'backup.json'}")
    server.stop()


if __name__ == "__main__":
    main()

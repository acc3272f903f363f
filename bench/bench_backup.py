"""Backups of a 1 GB pgbench database on the real path, against the raw tools, side by side in one run.

The opsdag DAGs run the way users run them: ``airflow standalone`` (LocalExecutor), each
run triggered through ``POST /api/v2/dags/{dag_id}/dagRuns``; a task's time is its task
instance's start -> end read back through the REST API. Per round, each measurement after a
CHECKPOINT, the order alternating between rounds (issue 19's figures):

1. logical: the ``backup`` task of ``backup__bench`` (pg_dump -Fd -j2 -Z6 with per-table
   rows and copy-sha256-v1 checksums) vs ``pg_dump --format=directory --jobs=2
   --compress=6`` by hand. Goal <= 1.10.
2. physical: the ``backup`` task of ``backup__bench-phys`` (pg_basebackup, zstd level 3 on
   the server with 2 workers, table checksums off: pgBackRest takes none either; its
   backup_manifest checksums are checked by the verify task) vs a pgBackRest full backup
   (zstd level 3, process-max=2). Goal <= 1.0. The same task with table checksums on
   (``backup__bench-phys-sums``: boots the backup to count and hash every table) is
   measured too, for what that proof costs.
3. physical restore: the ``restore`` task of ``drill__bench-phys`` (check the files against
   the manifest, extract, start the copy and wait until it accepts connections) vs
   ``pgbackrest restore`` of the same data (files only: see pgbackrest_ref.py). Goal <= 1.0.

The server and database (scale 70, about 1,054 MB) stay in ``--workdir`` between runs; the
Airflow home is ``<workdir>/state/airflow``. Prints a table, writes bench/results/backup.json.

    .venv/bin/python bench/bench_backup.py [--rounds 2]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import common
from pgbackrest_ref import PgBackRest

RUNNER = (
    "airflow standalone (LocalExecutor, SQLite), runs triggered through the REST API; task times "
    "from the task instances' start/end; median of the rounds, each measurement after a CHECKPOINT, "
    "order alternating between rounds"
)


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


def task_seconds(run: dict[str, Any], task: str) -> float:
    if run["state"] != "success":
        raise RuntimeError(f"run {run['run_id']} ended {run['state']}: {run['tasks']}")
    return run["tasks"][task]["seconds"]


def wait_for_dags(client, dag_ids: list[str], timeout: float = 300) -> None:
    from opsdag.airflow_api import AirflowApiError

    deadline = time.monotonic() + timeout
    for dag_id in dag_ids:
        while True:
            try:
                client.request("GET", f"/dags/{dag_id}")
                break
            except AirflowApiError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)


def ratio(a: float, b: float) -> float:
    return round(a / b, 3)


def main() -> None:
    parser = common.bench_parser(__doc__)
    parser.set_defaults(rounds=2)
    parser.add_argument("--level", type=int, default=6, help="gzip level of the logical backups")
    parser.add_argument("--zstd-level", type=int, default=3, help="zstd level, physical and pgBackRest")
    parser.add_argument("--keep-airflow", action="store_true", help="leave airflow standalone running")
    args = parser.parse_args()

    server = common.pgbench_server(args.workdir, args.scale)
    size = common.database_bytes(server)
    common.standalone_env(args.workdir, server)
    shutil.rmtree(args.workdir / "state" / "backups", ignore_errors=True)
    common.write_spec("bench", checksums=True, jobs=args.jobs, level=args.level)
    for name, sums in (("bench-phys", False), ("bench-phys-sums", True)):
        common.write_spec(
            name, checksums=sums, jobs=args.jobs, level=args.zstd_level, method="physical", compression="zstd"
        )
    pgbackrest = PgBackRest(args.workdir, server, level=args.zstd_level, processes=args.jobs)
    pgbackrest.setup()

    from opsdag.airflow_api import AirflowClient
    from opsdag.dev import standalone

    credentials = standalone.start(progress=common.log, timeout=420)
    client = AirflowClient(credentials)
    try:
        dags = ["backup__bench", "backup__bench-phys", "backup__bench-phys-sums", "drill__bench-phys"]
        wait_for_dags(client, dags)
        common.log(f"database: {size / 1e6:.0f} MB; warming up (not counted)")
        pg_dump_by_hand(server, args.workdir / "hand", jobs=args.jobs, level=args.level)
        for dag_id in ("backup__bench", "backup__bench-phys"):
            task_seconds(common.rest_run(client, dag_id), "backup")
        pgbackrest.full_backup()

        restore_dir = args.workdir / "pgbackrest-restore"
        runs: dict[str, dict[str, Any]] = {}

        def rest(key: str, dag_id: str, task: str):
            def step() -> float:
                runs[key] = common.rest_run(client, dag_id)
                return task_seconds(runs[key], task)

            return step

        rounds: list[dict[str, Any]] = []
        for n in range(args.rounds):
            steps = [
                (
                    "pg_dump_by_hand",
                    lambda: pg_dump_by_hand(server, args.workdir / "hand", jobs=args.jobs, level=args.level),
                ),
                ("logical_backup_task", rest("logical", "backup__bench", "backup")),
                ("pgbackrest_backup", pgbackrest.full_backup),
                ("physical_backup_task", rest("physical", "backup__bench-phys", "backup")),
                (
                    "physical_backup_task_with_table_checksums",
                    rest("sums", "backup__bench-phys-sums", "backup"),
                ),
                ("pgbackrest_restore", lambda: pgbackrest.restore(restore_dir)),
                ("physical_drill_restore_task", rest("drill", "drill__bench-phys", "restore")),
            ]
            measured = common.measure_round(server, n, steps)
            logical = runs["logical"]["xcom"]("backup") or {}
            drill_restore = runs["drill"]["xcom"]("restore") or {}
            record = {
                "round": n + 1,
                **{k: round(v, 3) for k, v in measured.items()},
                "logical_backup_task_inner": logical.get("timings", {}),
                "physical_backup_task_inner": (runs["physical"]["xcom"]("backup") or {}).get("timings", {}),
                "physical_drill_restore_inner": {
                    k: drill_restore.get(k) for k in ("fetch_seconds", "start_seconds", "seconds")
                },
                "drill_tasks": {k: v["seconds"] for k, v in runs["drill"]["tasks"].items()},
                "physical_dag_tasks": {k: v["seconds"] for k, v in runs["physical"]["tasks"].items()},
                "logical_dag_tasks": {k: v["seconds"] for k, v in runs["logical"]["tasks"].items()},
                "load_1m": round(os.getloadavg()[0], 2),
            }
            rounds.append(record)
            common.log(
                f"round {n + 1}: pg_dump {record['pg_dump_by_hand']:.2f} s | logical task "
                f"{record['logical_backup_task']:.2f} s | pgbackrest {record['pgbackrest_backup']:.2f} s | "
                f"physical task {record['physical_backup_task']:.2f} s (with table checksums "
                f"{record['physical_backup_task_with_table_checksums']:.2f} s) | pgbackrest restore "
                f"{record['pgbackrest_restore']:.2f} s | drill restore "
                f"{record['physical_drill_restore_task']:.2f} s"
            )
        med = {k: common.median([r[k] for r in rounds]) for k in rounds[0] if isinstance(rounds[0][k], float)}
        med.pop("load_1m", None)
        ratios = {
            "logical_backup_task_vs_pg_dump_by_hand": ratio(
                med["logical_backup_task"], med["pg_dump_by_hand"]
            ),
            "physical_backup_task_vs_pgbackrest_backup": ratio(
                med["physical_backup_task"], med["pgbackrest_backup"]
            ),
            "physical_backup_task_with_table_checksums_vs_pgbackrest_backup": ratio(
                med["physical_backup_task_with_table_checksums"], med["pgbackrest_backup"]
            ),
            "physical_drill_restore_task_vs_pgbackrest_restore": ratio(
                med["physical_drill_restore_task"], med["pgbackrest_restore"]
            ),
        }
        goals = {
            "logical_backup_task_vs_pg_dump_by_hand": 1.10,
            "physical_backup_task_vs_pgbackrest_backup": 1.0,
            "physical_drill_restore_task_vs_pgbackrest_restore": 1.0,
        }
        print(f"\n{'comparison':<66} {'ratio':>6} {'goal':>6}  met")
        for key, value in ratios.items():
            goal = goals.get(key)
            met = "-" if goal is None else ("yes" if value <= goal else "NO")
            print(f"{key:<66} {value:>6.3f} {goal if goal else '':>6}  {met}")
        common.write_result(
            "backup",
            database={"pgbench_scale": args.scale, "bytes": size},
            command=(
                f"pg_dump --format=directory --jobs={args.jobs} --compress={args.level}; "
                f"pgbackrest --type=full backup (zstd level {args.zstd_level}, process-max={args.jobs}); "
                "pgbackrest restore"
            ),
            rounds=rounds,
            medians=med,
            orchestration=common.orchestration_overhead(
                "logical backup task wall time minus the pg_dump wall time inside it (opsdag + Airflow "
                "around the tool, including the digest reader's tail after pg_dump ends)",
                [
                    {
                        "task": r["logical_backup_task"],
                        "inner": r["logical_backup_task_inner"].get("dump_seconds", 0),
                    }
                    for r in rounds
                ],
                "task",
                "inner",
                med["pg_dump_by_hand"],
            ),
            ratio=ratios,
            target="logical task / pg_dump <= 1.10; physical task / pgBackRest backup <= 1.0; "
            "drill restore task / pgbackrest restore <= 1.0",
            runner=RUNNER,
            extra={
                "goals": goals,
                "settings": {
                    "logical": f"gzip level {args.level}, jobs {args.jobs}, table checksums copy-sha256-v1",
                    "physical": f"pg_basebackup --compress=server-zstd:level={args.zstd_level},workers=2",
                    "pgbackrest": f"2.45, compress-type=zst level {args.zstd_level}, "
                    f"process-max={args.jobs}, archive-check=n",
                    "pgbackrest_repo_bytes": pgbackrest.repo_bytes(),
                },
                "notes": [
                    "the drill's restore task also starts the restored copy and waits for it "
                    "(start_seconds); pgbackrest restore only writes the files",
                ],
            },
        )
    finally:
        client.close()
        if not args.keep_airflow:
            standalone.stop(progress=common.log)
        server.stop()


if __name__ == "__main__":
    main()

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

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import common


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


def main() -> None:
    parser = common.bench_parser(__doc__)
    parser.add_argument("--level", type=int, default=6)
    args = parser.parse_args()

    server, size, dag_file = common.prepare(args)
    common.write_spec("bench", checksums=True, jobs=args.jobs, level=args.level)
    common.write_spec("bench-counts", checksums=False, jobs=args.jobs, level=args.level)
    shutil.rmtree(args.workdir / "state" / "backups", ignore_errors=True)

    common.log(f"database: {size / 1e6:.0f} MB; warming up (one dump by hand, not counted)")
    pg_dump_by_hand(server, args.workdir / "hand", jobs=args.jobs, level=args.level)

    rounds: list[dict[str, Any]] = []
    for n in range(args.rounds):
        steps = [
            (
                "hand",
                lambda: pg_dump_by_hand(server, args.workdir / "hand", jobs=args.jobs, level=args.level),
            ),
            ("full", lambda: common.run_dag(dag_file, "backup__bench")),
            ("counts", lambda: common.run_dag(dag_file, "backup__bench-counts")),
        ]
        measured = common.measure_round(server, n, steps)
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
        common.log(
            f"round {n + 1}: by hand {hand:.2f} s | backup task {record['backup_task_seconds']:.2f} s "
            f"(pg_dump inside {inner['dump_seconds']:.2f} s) | counts only "
            f"{record['backup_task_counts_only_seconds']:.2f} s | "
            f"verify {record['verify_task_seconds']:.2f} s"
        )

    hand = common.median([r["pg_dump_by_hand_seconds"] for r in rounds])
    task = common.median([r["backup_task_seconds"] for r in rounds])
    counts = common.median([r["backup_task_counts_only_seconds"] for r in rounds])
    inner = common.median([r["backup_task_pg_dump_seconds"] for r in rounds])
    common.write_result(
        "backup",
        database={"pgbench_scale": args.scale, "bytes": size},
        command=f"pg_dump --format=directory --jobs={args.jobs} --compress={args.level}",
        rounds=rounds,
        medians={
            "pg_dump_by_hand_seconds": hand,
            "backup_task_seconds": task,
            "backup_task_counts_only_seconds": counts,
            "backup_task_pg_dump_seconds": inner,
            "verify_task_seconds": common.median([r["verify_task_seconds"] for r in rounds]),
            "manifest_task_seconds": common.median([r["manifest_task_seconds"] for r in rounds]),
            "stored_bytes": rounds[-1]["stored_bytes"],
        },
        orchestration=common.orchestration_overhead(
            "backup task wall time minus the pg_dump wall time inside it (opsdag + Airflow around "
            "the tool); the stats scan runs concurrently with pg_dump and shows up as a slower pg_dump",
            rounds,
            "backup_task_seconds",
            "backup_task_pg_dump_seconds",
            hand,
        ),
        ratio={
            "backup_task_vs_by_hand": round(task / hand, 3),
            "backup_task_counts_only_vs_by_hand": round(counts / hand, 3),
            "pg_dump_inside_task_vs_by_hand": round(inner / hand, 3),
        },
        target="backup task / by hand < 1.10",
    )
    server.stop()


if __name__ == "__main__":
    main()

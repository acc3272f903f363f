"""Drill of a 1 GB pgbench backup: the drill's restore task against the same pg_restore by hand.

Side by side, interleaved, in one run: ``pg_restore --format=directory --jobs=2
--no-owner --no-privileges --exit-on-error`` of the backup into a fresh database by
hand, and the ``restore`` task of ``drill__bench`` run by Airflow (``dag.test()``) on the
same backup; plus the drill's RTO (provisioning start -> verified, queryable copy, which
includes checking every table's rows and checksum). The figure is the ratio restore
task / by hand (target: < 1.10).

Uses the server, pgbench database and Airflow home of bench_backup.py (``--workdir``).
Prints and writes bench/results/drill.json.

    .venv/bin/python bench/bench_drill.py [--rounds 3]
"""

from __future__ import annotations

import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import common


def take_backup(jobs: int, level: int) -> str:
    """A verified backup of ``bench`` by the engine (the benchmark measures restores)."""
    from airflow.sdk import BaseHook

    from opsdag.backups import engine
    from opsdag.backups.pg import target_from_connection
    from opsdag.backups.storage import BackupStore

    source = target_from_connection(BaseHook.get_connection("bench_pg"), "bench")
    store = BackupStore()
    backup_id = engine.backup_id_for(datetime.now(UTC), "bench-drill")
    options = engine.BackupOptions(jobs=jobs, level=level)
    engine.take_backup(source, store, "bench", backup_id, options)
    engine.publish_manifest(store, "bench", backup_id)
    assert engine.verify(store, "bench", backup_id)["status"] == "verified"
    return backup_id


def pg_restore_by_hand(server, dump_dir: Path, *, jobs: int) -> dict[str, float]:
    from opsdag.backups.pg import pg_tool

    server.psql("DROP DATABASE IF EXISTS bench_by_hand;")
    started = time.monotonic()
    server.psql("CREATE DATABASE bench_by_hand TEMPLATE template0;")
    created = time.monotonic()
    argv = [
        pg_tool("pg_restore", 15),
        "--format=directory",
        f"--jobs={jobs}",
        "--no-owner",
        "--no-privileges",
    ]
    argv += ["--exit-on-error", "--no-password", "--dbname=bench_by_hand", str(dump_dir)]
    subprocess.run(argv, env={**os.environ, **server.env()}, check=True, capture_output=True)
    done = time.monotonic()
    server.psql("DROP DATABASE bench_by_hand;")
    return {
        "pg_restore_seconds": round(done - created, 3),
        "create_and_restore_seconds": round(done - started, 3),
    }


def main() -> None:
    args = common.bench_parser(__doc__).parse_args()

    server, size, dag_file = common.prepare(args)
    common.write_spec("bench", checksums=True, jobs=args.jobs)
    backup_id = take_backup(args.jobs, 6)
    dump_dir = Path(os.environ["OPSDAG_BACKUPS_DIR"]) / "bench" / backup_id / "data"
    common.log(
        f"database {size / 1e6:.0f} MB, backup {backup_id}; warming up (one restore by hand, not counted)"
    )
    pg_restore_by_hand(server, dump_dir, jobs=args.jobs)

    rounds: list[dict[str, Any]] = []
    for n in range(args.rounds):
        steps = [
            ("hand", lambda: pg_restore_by_hand(server, dump_dir, jobs=args.jobs)),
            ("drill", lambda: common.run_dag(dag_file, "drill__bench")),
        ]
        measured = common.measure_round(server, n, steps)
        hand, drill = measured["hand"], measured["drill"]
        assert drill["state"] == "success", drill["tasks"]
        restore = drill["xcoms"]["restore.return_value"]
        measure = drill["xcoms"]["measure.return_value"]
        record = {
            "round": n + 1,
            "pg_restore_by_hand_seconds": hand["pg_restore_seconds"],
            "restore_task_seconds": drill["tasks"]["restore"]["seconds"],
            "restore_task_pg_restore_seconds": restore["pg_restore_seconds"],
            "restore_task_checksum_and_fetch_seconds": restore["fetch_seconds"],
            "provision_task_seconds": drill["tasks"]["provision"]["seconds"],
            "verify_task_seconds": drill["tasks"]["verify"]["seconds"],
            "rto_seconds": measure["rto_seconds"],
            "rpo_seconds": measure["rpo_seconds"],
            "dag_run_seconds": drill["wall_seconds"],
            "tasks": {k: v["seconds"] for k, v in drill["tasks"].items()},
        }
        rounds.append(record)
        common.log(
            f"round {n + 1}: by hand {hand['pg_restore_seconds']:.2f} s | restore task "
            f"{record['restore_task_seconds']:.2f} s "
            f"(pg_restore inside {restore['pg_restore_seconds']:.2f} s) "
            f"| verify {record['verify_task_seconds']:.2f} s | RTO {measure['rto_seconds']:.2f} s"
        )

    hand_s = common.median([r["pg_restore_by_hand_seconds"] for r in rounds])
    task_s = common.median([r["restore_task_seconds"] for r in rounds])
    common.write_result(
        "drill",
        database={"pgbench_scale": args.scale, "bytes": size, "backup_id": backup_id},
        command=(
            f"pg_restore --format=directory --jobs={args.jobs} --no-owner --no-privileges --exit-on-error"
        ),
        rounds=rounds,
        medians={
            "pg_restore_by_hand_seconds": hand_s,
            "restore_task_seconds": task_s,
            "restore_task_pg_restore_seconds": common.median(
                [r["restore_task_pg_restore_seconds"] for r in rounds]
            ),
            "verify_task_seconds": common.median([r["verify_task_seconds"] for r in rounds]),
            "rto_seconds": common.median([r["rto_seconds"] for r in rounds]),
            "dag_run_seconds": common.median([r["dag_run_seconds"] for r in rounds]),
        },
        orchestration=common.orchestration_overhead(
            "restore task wall time minus the pg_restore wall time inside it (sha256 of the "
            "backup's files against the manifest, connections, Airflow)",
            rounds,
            "restore_task_seconds",
            "restore_task_pg_restore_seconds",
            hand_s,
        ),
        ratio={"restore_task_vs_by_hand": round(task_s / hand_s, 3)},
        target="restore task / by hand < 1.10",
    )
    server.stop()


if __name__ == "__main__":
    main()

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

import argparse
import json
import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_backup import (
    RESULTS,
    ROOT,
    airflow_setup,
    database_bytes,
    log,
    machine,
    median,
    pgbench_server,
    run_dag,
    write_spec,
)


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
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=int, default=70)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".state" / "bench" / "pg")
    args = parser.parse_args()

    server = pgbench_server(args.workdir, args.scale)
    size = database_bytes(server)
    dag_file = airflow_setup(args.workdir, server)
    write_spec("bench", checksums=True, jobs=args.jobs)
    backup_id = take_backup(args.jobs, 6)
    dump_dir = Path(os.environ["OPSDAG_BACKUPS_DIR"]) / "bench" / backup_id / "data"
    log(f"database {size / 1e6:.0f} MB, backup {backup_id}; warming up (one restore by hand, not counted)")
    pg_restore_by_hand(server, dump_dir, jobs=args.jobs)

    rounds: list[dict[str, Any]] = []
    for n in range(args.rounds):
        # Every measurement starts after a CHECKPOINT; the order alternates between rounds.
        measured: dict[str, Any] = {}
        steps = [
            ("hand", lambda: pg_restore_by_hand(server, dump_dir, jobs=args.jobs)),
            ("drill", lambda: run_dag(dag_file, "drill__bench")),
        ]
        for name, step in steps if n % 2 == 0 else list(reversed(steps)):
            server.psql("CHECKPOINT;")
            measured[name] = step()
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
        log(
            f"round {n + 1}: by hand {hand['pg_restore_seconds']:.2f} s | restore task "
            f"{record['restore_task_seconds']:.2f} s "
            f"(pg_restore inside {restore['pg_restore_seconds']:.2f} s) "
            f"| verify {record['verify_task_seconds']:.2f} s | RTO {measure['rto_seconds']:.2f} s"
        )

    hand_s = median([r["pg_restore_by_hand_seconds"] for r in rounds])
    task_s = median([r["restore_task_seconds"] for r in rounds])
    result = {
        "benchmark": "drill",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "database": {"pgbench_scale": args.scale, "bytes": size, "backup_id": backup_id},
        "command": (
            f"pg_restore --format=directory --jobs={args.jobs} --no-owner --no-privileges --exit-on-error"
        ),
        "runner": "Airflow dag.test() (Task SDK in-process runner); median of the rounds, "
        "each measurement after a CHECKPOINT, order alternating between rounds",
        "rounds": rounds,
        "median": {
            "pg_restore_by_hand_seconds": hand_s,
            "restore_task_seconds": task_s,
            "restore_task_pg_restore_seconds": median([r["restore_task_pg_restore_seconds"] for r in rounds]),
            "verify_task_seconds": median([r["verify_task_seconds"] for r in rounds]),
            "rto_seconds": median([r["rto_seconds"] for r in rounds]),
            "dag_run_seconds": median([r["dag_run_seconds"] for r in rounds]),
        },
        "orchestration": {
            "what": "restore task wall time minus the pg_restore wall time inside it (sha256 of the "
            "backup's files against the manifest, connections, Airflow)",
            "median_seconds": median(
                [r["restore_task_seconds"] - r["restore_task_pg_restore_seconds"] for r in rounds]
            ),
            "share_of_by_hand": round(
                median([r["restore_task_seconds"] - r["restore_task_pg_restore_seconds"] for r in rounds])
                / hand_s,
                4,
            ),
        },
        "ratio": {"restore_task_vs_by_hand": round(task_s / hand_s, 3)},
        "target": "restore task / by hand < 1.10",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "drill.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("database", "median", "orchestration", "ratio")}, indent=2))
    log(f"written to {RESULTS / 'drill.json'}")
    server.stop()


if __name__ == "__main__":
    main()

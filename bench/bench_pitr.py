"""Point-in-time drill of a 1 GB pgbench database archiving its WAL: the RTO and the RPO.

The real path: ``airflow standalone``, runs triggered through the REST API. A PostgreSQL 15
server whose ``archive_command`` is ``opsdag wal push`` (as the sandbox's) holds the pgbench
database (scale 70, about 1.1 GB) and a marker table. Per round: a physical base backup
(``backup__bench-pitr``, zstd), then pgbench writes for ``--write`` seconds with a marker row
every second, the target time taken half-way; the WAL is switched and archived; then
``drill__bench-pitr`` recovers to that target. The drill's own figures are reported: RTO
(provisioning -> verified copy), the restore task (extract + WAL replay + promotion), RPO
(target -> last transaction restored), the WAL replayed, and whether the marker rows were
exact. Objective of our users (USERS.md): RTO under 30 minutes, RPO under 5 minutes.

The server and database are kept in ``--workdir`` (default .state/bench/pitr) between runs.
Prints and writes bench/results/pitr.json.

    .venv/bin/python bench/bench_pitr.py [--rounds 2] [--scale 70] [--write 20]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import common
import yaml

DB = "bench-pitr"


def archiving_server(workdir: Path, scale: int):
    """The server with WAL archiving into ``workdir/state/backups/<DB>/wal`` and database ``bench``."""
    from opsdag.backups.pg_server import hand_over, server_user
    from opsdag.backups.wal_push import archive_dir
    from opsdag.dev.sandbox.wal_archiving import archive_command, archive_python

    root = workdir / "state" / "backups"
    directory = archive_dir(root, DB)
    directory.mkdir(parents=True, exist_ok=True)
    hand_over(directory, server_user())
    os.chmod(workdir, 0o711)
    settings = {
        "archive_mode": "on",
        "archive_command": archive_command(archive_python(server_user()), root, DB),
        "archive_timeout": "60s",
    }
    server = common.pgbench_server(workdir, scale, settings)
    server.psql(
        "CREATE TABLE IF NOT EXISTS marker (seq bigserial PRIMARY KEY, "
        "written_at timestamptz NOT NULL DEFAULT clock_timestamp());",
        "bench",
    )
    return server


def write_spec() -> None:
    spec = {
        "name": DB,
        "description": "benchmark database (pgbench) with WAL archiving",
        "owners": ["bench"],
        "connection_id": "bench_pg",
        "backup": {
            "method": "physical",
            "schedule": "@daily",
            "compression": "zstd",
            "compression_level": 3,
            "table_checksums": False,
            "wal_archive": {"enabled": True, "archive_timeout": "60s"},
        },
        "retention": {"keep_last": 1, "daily": 0, "weekly": 0, "monthly": 0},
        "drill": {
            "on_new_backup": False,
            "target_conn_id": "bench_drill",
            "pitr_marker": {"table": "marker", "time_column": "written_at"},
        },
        "objectives": {"rto": "30m", "rpo": "5m"},
        "notifications": {"on_success": False},
    }
    path = Path(os.environ["OPSDAG_INCLUDE_DIR"]) / "databases" / f"{DB}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def write_load(server, seconds: float) -> datetime:
    """pgbench for ``seconds`` with a marker every second; the target: a moment half-way."""
    env = {**os.environ, **server.env("bench")}
    load = subprocess.Popen(
        [server.bin("pgbench"), "-c", "2", "-j", "2", "-T", str(int(seconds)), "-n", "bench"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    target: dict[str, datetime] = {}
    stop = threading.Event()

    def markers() -> None:
        started = time.monotonic()
        while not stop.is_set():
            server.psql("INSERT INTO marker DEFAULT VALUES;", "bench")
            if "at" not in target and time.monotonic() - started >= seconds / 2:
                target["at"] = datetime.fromisoformat(
                    server.psql("SELECT to_json(clock_timestamp())#>>'{}';", "bench").strip()
                )
            stop.wait(1.0)

    writer = threading.Thread(target=markers)
    writer.start()
    load.wait(timeout=seconds + 60)
    stop.set()
    writer.join()
    server.psql("INSERT INTO marker DEFAULT VALUES; SELECT pg_switch_wal();", "bench")
    return target["at"]


def wait_archived(server, timeout: float = 120) -> None:
    """Until the archiver has nothing left to push (the segment just switched included)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = list((server.data_dir / "pg_wal" / "archive_status").glob("*.ready"))
        if not ready:
            return
        time.sleep(0.5)
    raise TimeoutError("the archiver did not catch up")


def main() -> None:
    parser = common.bench_parser(__doc__)
    parser.set_defaults(rounds=2, workdir=common.ROOT / ".state" / "bench" / "pitr")
    parser.add_argument("--write", type=float, default=20.0, help="seconds of pgbench writes per round")
    args = parser.parse_args()

    server = archiving_server(args.workdir, args.scale)
    size = common.database_bytes(server)
    common.standalone_env(args.workdir, server)
    write_spec()

    from opsdag.airflow_api import AirflowClient
    from opsdag.dev import standalone

    credentials = standalone.start(progress=common.log, timeout=420)
    client = AirflowClient(credentials)
    rounds: list[dict[str, Any]] = []
    try:
        for dag in (f"backup__{DB}", f"drill__{DB}"):
            client.unpause(dag)
        for n in range(args.rounds):
            backup = common.rest_run(client, f"backup__{DB}")
            if backup["state"] != "success":
                raise SystemExit(f"backup run failed: {backup['tasks']}")
            target = write_load(server, args.write)
            wait_archived(server)
            drill = common.rest_run(client, f"drill__{DB}", {"recovery_target_time": target.isoformat()})
            if drill["state"] != "success":
                raise SystemExit(f"drill run failed: {drill['tasks']}")
            measure = drill["xcom"]("measure")
            verify = drill["xcom"]("verify")
            pick = drill["xcom"]("pick_backup")
            wal = pick["recovery"]["wal"]
            marker = verify["recovery"]["marker"]
            row = {
                "round": n + 1,
                "backup_task_seconds": backup["tasks"]["backup"]["seconds"],
                "target": target.isoformat(),
                "wal_segments_in_chain": wal["segments"],
                "restore_task_seconds": drill["tasks"]["restore"]["seconds"],
                "verify_task_seconds": drill["tasks"]["verify"]["seconds"],
                "rto_seconds": measure["rto_seconds"],
                "rpo_seconds": measure["rpo_seconds"],
                "marker_rows_exact": marker["ok"],
                "marker_rows": marker["restored"]["rows"],
                "drill_run_seconds": drill["run_seconds"],
            }
            rounds.append(row)
            common.log(
                f"round {n + 1}: restore {row['restore_task_seconds']} s "
                f"(WAL chain {row['wal_segments_in_chain']} segments), RTO {row['rto_seconds']} s, "
                f"RPO {row['rpo_seconds']} s, markers exact {row['marker_rows_exact']}"
            )
    finally:
        client.close()
        standalone.stop(progress=common.log)
        server.stop()
    medians = {
        key: common.median([r[key] for r in rounds])
        for key in ("restore_task_seconds", "rto_seconds", "rpo_seconds", "backup_task_seconds")
    }
    common.write_result(
        "pitr",
        database={"pgbench_scale": args.scale, "bytes": size},
        command=f"drill__{DB} with recovery_target_time half-way through {args.write:g} s of pgbench writes",
        rounds=rounds,
        medians=medians,
        orchestration={},
        ratio={},
        target="RTO <= 30 min and RPO <= 5 min (USERS.md); marker rows exact",
        runner="airflow standalone (LocalExecutor, SQLite), runs triggered through the REST API",
    )
    print(
        f"PITR drill of {size / 1e9:.2f} GB: median restore {medians['restore_task_seconds']} s, "
        f"RTO {medians['rto_seconds']} s, RPO {medians['rpo_seconds']} s "
        f"(marker rows exact in {sum(r['marker_rows_exact'] for r in rounds)}/{len(rounds)} rounds)"
    )
    shutil.rmtree(args.workdir / "state" / "scratch", ignore_errors=True)


if __name__ == "__main__":
    main()

"""WAL push throughput: segments/s of ``python -m opsdag wal push`` vs ``cp`` to the same disk.

What PostgreSQL's archiver does: one process per segment, run one after the other. So each
method here runs as a new process per 16 MiB segment, sequentially, into an empty archive
directory on the same file system as the sources (``--workdir``, default under .state/):

- ``cp``: ``cp SRC DST`` (the classic archive_command; no fsync, so not durable at exit 0);
- ``cp + sync``: ``cp SRC DST && sync DST`` (the same made durable: coreutils' ``sync FILE``
  fsyncs it), the fair baseline for a command that must not lose a segment;
- ``opsdag wal push``: the sandbox's archive_command exactly (``python -s -m opsdag wal push
  --database D --storage ROOT %p %f``, PYTHONPATH=plugins): temp file, sha256 while copying,
  fsync, link, checksum file, directory fsync.

Rounds alternate the order of the methods; the archive directory is emptied and the page
cache dropped of nothing (the sources stay cached, as a just-written WAL segment is).
Result: bench/results/wal_push.json (median segments/s per method, every round, the
machine with its load average). Bounded: ``--segments`` (50) x 3 methods x ``--rounds`` (3).

Also, once, ``--s3-segments`` (5; 0 skips it) pushes to S3 (``--storage s3://... --conn-id``)
against moto's server on loopback: that path imports Airflow for the connection in every
process, which is what bounds it (the HTTP transfer on loopback is a small part).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "plugins"))

from common import RESULTS, log, machine  # noqa: E402

from opsdag.backups.wal_names import segment_of  # noqa: E402

SEGMENT = 16 << 20
DB = "bench-db"
DISTINCT_SOURCES = 10  # 160 MiB of sources, cycled over the segment names


def make_sources(workdir: Path) -> list[Path]:
    sources = workdir / "pg_wal"
    sources.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(DISTINCT_SOURCES):
        path = sources / f"source-{i}"
        if not path.exists() or path.stat().st_size != SEGMENT:
            path.write_bytes(os.urandom(SEGMENT))
        paths.append(path)
    return paths


def commands(method: str, source: Path, name: str, root: Path) -> list[str]:
    target = root / DB / "wal" / name
    if method == "cp":
        return ["cp", str(source), str(target)]
    if method == "cp + sync":
        return ["sh", "-c", 'cp "$1" "$2" && sync "$2"', "sh", str(source), str(target)]
    push = [sys.executable, "-s", "-m", "opsdag", "wal", "push", "--database", DB, "--storage", str(root)]
    return [*push, str(source), name]


def run_method(method: str, sources: list[Path], names: list[str], root: Path) -> float:
    """Seconds to archive every name, one process each, sequentially, into an empty archive."""
    shutil.rmtree(root, ignore_errors=True)
    (root / DB / "wal").mkdir(parents=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT / "plugins")}
    started = time.monotonic()
    for i, name in enumerate(names):
        subprocess.run(
            commands(method, sources[i % len(sources)], name, root),
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    elapsed = time.monotonic() - started
    stored = sorted(p.name for p in (root / DB / "wal").iterdir() if not p.name.endswith(".sha256"))
    assert stored == sorted(names), f"{method}: {len(stored)} segments stored, {len(names)} expected"
    return elapsed


def s3_push_seconds(sources: list[Path], count: int) -> dict:
    """Seconds for ``count`` pushes to S3 (moto on loopback), one process each, sequentially."""
    import uuid

    import boto3

    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    from s3_fixtures import MOTO_SERVER, S3Server, _free_port, connection_json
    from support.waiting import wait_for

    port, log_file = _free_port(), sources[0].parent / "moto.log"
    with open(log_file, "wb") as out:
        process = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = S3Server(f"http://127.0.0.1:{port}", process, log_file, log_file.with_suffix(".rec"))
    try:
        wait_for(server.ready, timeout=30, what="moto_server")
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            region_name="us-east-1",
            aws_access_key_id="k",
            aws_secret_access_key="s",
        ).create_bucket(Bucket=bucket)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(ROOT / "plugins"),
            "AIRFLOW_CONN_BENCH_S3": connection_json(server.endpoint),
        }
        started = time.monotonic()
        for i in range(count):
            name = segment_of((1 + i) * SEGMENT, 1, SEGMENT).name
            argv = [sys.executable, "-s", "-m", "opsdag", "wal", "push", "--database", DB]
            argv += ["--storage", f"s3://{bucket}/backups", "--conn-id", "bench_s3"]
            subprocess.run(
                [*argv, str(sources[i % len(sources)]), name], env=env, check=True, stdout=subprocess.DEVNULL
            )
        seconds = time.monotonic() - started
    finally:
        server.stop()
    return {
        "endpoint": "moto_server on loopback (HTTP)",
        "segments": count,
        "seconds": round(seconds, 3),
        "segments_per_second": round(count / seconds, 2),
        "ms_per_segment": round(1000 * seconds / count, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--segments", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".state" / "bench" / "wal")
    parser.add_argument("--s3-segments", type=int, default=5)
    args = parser.parse_args()

    methods = ["cp", "cp + sync", "opsdag wal push"]
    sources = make_sources(args.workdir)
    names = [segment_of((1 + i) * SEGMENT, 1, SEGMENT).name for i in range(args.segments)]
    root = args.workdir / "archive"
    rounds = []
    for n in range(args.rounds):
        order = methods if n % 2 == 0 else methods[::-1]
        seconds = {}
        for method in order:
            seconds[method] = round(run_method(method, sources, names, root), 3)
            log(f"round {n + 1}: {method}: {args.segments} segments in {seconds[method]:.2f} s")
        rounds.append({"order": order, "seconds": seconds})
    shutil.rmtree(root, ignore_errors=True)
    s3 = s3_push_seconds(sources, args.s3_segments) if args.s3_segments else None
    if s3:
        log(f"S3: {s3['segments']} segments in {s3['seconds']:.2f} s")

    median = {m: round(statistics.median(r["seconds"][m] for r in rounds), 3) for m in methods}
    per_second = {m: round(args.segments / median[m], 1) for m in methods}
    push = per_second["opsdag wal push"]
    result = {
        "benchmark": "wal_push",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "segments": args.segments,
        "segment_bytes": SEGMENT,
        "disk": f"{args.workdir} (sources and archive on the same file system)",
        "python": sys.executable,
        "command": " ".join(commands("opsdag wal push", Path("%p"), "%f", Path("ROOT"))),
        "rounds": rounds,
        "median_seconds": median,
        "segments_per_second": per_second,
        "ms_per_segment": {m: round(1000 * median[m] / args.segments, 1) for m in methods},
        "ratio": {
            "push_vs_cp": round(push / per_second["cp"], 3),
            "push_vs_cp_sync": round(push / per_second["cp + sync"], 3),
        },
        "s3_push": s3,
        "note": (
            "one process per segment, sequential, as PostgreSQL's archiver runs archive_command; "
            "a server producing WAL at its fastest needs the archive to keep up at segments/s x 16 MiB"
        ),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "wal_push.json"
    path.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\n{'method':<18}{'segments/s':>12}{'ms/segment':>12}{'MiB/s':>10}")
    for m in methods:
        print(f"{m:<18}{per_second[m]:>12.1f}{result['ms_per_segment'][m]:>12.1f}{per_second[m] * 16:>10.0f}")
    if s3:
        print(
            f"{'wal push to S3':<18}{s3['segments_per_second']:>12.2f}{s3['ms_per_segment']:>12.1f}"
            f"{s3['segments_per_second'] * 16:>10.1f}   (moto on loopback, {s3['segments']} segments)"
        )
    ratio = result["ratio"]
    print(f"\nopsdag wal push / cp: {ratio['push_vs_cp']}x; / cp + sync: {ratio['push_vs_cp_sync']}x")
    print(f"load average at end: {result['machine']['load_average_1_5_15_at_end']}")
    log(f"written to {path}")


if __name__ == "__main__":
    main()

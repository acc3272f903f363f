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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--segments", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".state" / "bench" / "wal")
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
    ratio = result["ratio"]
    print(f"\nopsdag wal push / cp: {ratio['push_vs_cp']}x; / cp + sync: {ratio['push_vs_cp_sync']}x")
    print(f"load average at end: {result['machine']['load_average_1_5_15_at_end']}")
    log(f"written to {path}")


if __name__ == "__main__":
    main()

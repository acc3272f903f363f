"""The release bench's options, its plan of runs, and the line each run gets in the log."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import release_figures as figures
from airflow_target import TARGETS, Target
from release_table import BENCH_ERROR

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Options:
    target: Target
    runs: int  # healthy runs per strategy, and as many faulty ones
    strategies: list[str]
    faults: list[str]  # the faulty runs cycle through these
    dags_test_runs: int
    out: Path
    logs: Path

    def command(self) -> str:
        dags_test = f" --dags-test-runs {self.dags_test_runs}" if self.target.name == "standalone" else ""
        return (
            f".venv/bin/python bench/bench_release.py --airflow {self.target.name} --runs {self.runs} "
            f"--strategies {','.join(self.strategies)} --faults {','.join(self.faults)}{dags_test}"
        )


def options(doc: str | None, argv: list[str] | None = None) -> tuple[Options, str | None]:
    """The options, and the result file to resummarize (None: run the bench)."""
    env = os.environ.get
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--airflow", choices=sorted(TARGETS), default="standalone", help="default: standalone"
    )
    parser.add_argument("--runs", type=int, default=int(env("BENCH_RUNS", "5")), help="per strategy and kind")
    parser.add_argument("--strategies", default=env("BENCH_STRATEGIES", "canary,bluegreen,rolling"))
    parser.add_argument("--faults", default=env("BENCH_FAULTS", "errors,slow,crash,late"))
    parser.add_argument("--dags-test-runs", type=int, help="standalone only (default 2; cluster: 0)")
    parser.add_argument(
        "--out", type=Path, help="default: bench/results/release.json (cluster: release_cluster.json)"
    )
    parser.add_argument(
        "--resummarize", nargs="?", const="", metavar="RESULT_JSON", help="default: the --out file"
    )
    args = parser.parse_args(argv)
    target = TARGETS[args.airflow]
    dags_test_runs = args.dags_test_runs
    if dags_test_runs is None:
        dags_test_runs = int(env("BENCH_DAGS_TEST_RUNS", "2")) if target.name == "standalone" else 0
    if args.runs < 1:
        parser.error("--runs: at least 1")
    if dags_test_runs and target.name != "standalone":
        parser.error("--dags-test-runs: the airflow dags test column runs with --airflow standalone only")
    faults = [f for f in args.faults.split(",") if f]
    if unknown := [f for f in faults if f not in figures.FAULT_KINDS]:
        parser.error(f"--faults: unknown {unknown}; there are {', '.join(figures.FAULT_KINDS)}")
    out = args.out or Path(env("BENCH_OUT", ROOT / "bench" / "results" / target.result_file))
    opts = Options(
        target=target,
        runs=args.runs,
        strategies=[s for s in args.strategies.split(",") if s],
        faults=faults,
        dags_test_runs=dags_test_runs,
        out=out,
        logs=Path(env("BENCH_LOGS", ROOT / ".state" / "bench" / target.logs_dir)),
    )
    return opts, (None if args.resummarize is None else args.resummarize or str(out))


def plan(opts: Options) -> list[tuple[str, str, str | None]]:
    """(strategy, tag, fault kind or None) in run order: healthy and faulty alternate."""
    runs = []
    for strategy in opts.strategies:
        for i in range(opts.runs):
            runs.append((strategy, figures.HEALTHY_TAG, None))
            kind = opts.faults[i % len(opts.faults)]
            runs.append((strategy, figures.FAULT_KINDS[kind], kind))
    return runs


def bench_error(strategy: str, tag: str, kind: str | None, exc: Exception) -> dict:
    return {"strategy": strategy, "tag": tag, "kind": kind, "status": BENCH_ERROR, "why": f"{exc!r}"[:2000]}


def say(row: dict) -> str:
    parts = [row["status"]]
    if row.get("failed_stage"):
        parts.append(f"at {row['failed_stage']}")
    for key in (
        "time_to_detect_s",
        "crash_detect_s",
        "verdict_to_router_s",
        "time_to_safety_s",
        "exposure_s",
        "overhead_s",
        "trigger_to_end_s",
    ):
        if row.get(key) is not None:
            parts.append(f"{key.removesuffix('_s')} {row[key]} s")
    if row.get("kind") == figures.CRASH:
        parts.append(f"main answers {row['main_answers']}")
    if gaps := [g["gap_s"] for g in row.get("scheduling_gaps") or []]:
        parts.append(f"task gaps {len(gaps)}, max {max(gaps):g} s")
    if row.get("status") != "promoted" and (row.get("kind") is None or row["status"] == "bench error"):
        parts.append(f"why: {row.get('why')}")
    parts.append(f"load {os.getloadavg()[0]:.2f}")
    return ", ".join(parts)

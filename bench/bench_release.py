"""Release benchmark on the sandbox: time to detect, time to roll back, orchestration overhead.

Runs ``release__demo-api`` through ``scripts/airflow dags test`` against a sandbox of
its own (4-step canary, 5 s bakes, 2 s measurement interval), several times each:

- a faulty version (8 % errors): time to detect = first 5xx answered by the canary, as
  counted by the load generator -> the gate's failing verdict; time to roll back = that
  verdict -> the last answer from the canary (after it, 100 % of requests are answered
  by stable). The load generator rewrites its counts every 0.5 s: that is the resolution.
- a healthy version: orchestration overhead = the run's duration (start -> report) minus
  the configured bake time; also the whole CLI wall time, Airflow's start-up included.

Writes bench/results/release.json.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT / "tests"))

from support.sandbox import running_sandbox  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
STEPS = [{"weight": w, "bake": "5s"} for w in (10, 25, 50, 100)]
BAKE_S = 5 * len(STEPS)
FAULTY, HEALTHY = "1.2.0-errors", "1.1.0"


def make_include(directory: Path) -> Path:
    include = directory / "include"
    subprocess.run(["cp", "-r", str(ROOT / "include"), str(include)], check=True)
    path = include / "services" / "demo-api.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["canary"]["steps"] = STEPS
    for metric in spec["analysis"]["metrics"]:
        metric["interval"] = "2s"
        metric["initial_delay"] = "2s"
    spec.pop("notifications", None)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return include


class CountsSampler:
    """Reads the load generator's counts file every 0.1 s while a release runs."""

    def __init__(self, counts_file: Path) -> None:
        self.counts_file = counts_file
        self.samples: list[tuple[float, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> CountsSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        last = None
        while not self._stop.wait(0.1):
            try:
                data = json.loads(self.counts_file.read_text())
            except (OSError, ValueError):
                continue
            if data.get("updated_at") != last:
                last = data.get("updated_at")
                self.samples.append((data["updated_at"], data.get("by_version_status", {})))


def release(env: dict[str, str], image: str) -> tuple[float, dict]:
    reports = Path(env["OPSDAG_REPORTS_DIR"]) / "release__demo-api"
    before = set(reports.glob("*.json")) if reports.exists() else set()
    start = time.time()
    command = ["dags", "test", "release__demo-api", "-c", json.dumps({"image": image})]
    subprocess.run([str(ROOT / "scripts" / "airflow"), *command], env=env, capture_output=True, timeout=600)
    wall = time.time() - start
    [new] = sorted(set(reports.glob("*.json")) - before)
    return wall, json.loads(new.read_text())


def faulty_run(env: dict[str, str], sandbox) -> dict:
    sandbox.reset()
    with CountsSampler(Path(sandbox.status()["loadgen"]["counts_file"])) as sampler:
        wall, report = release(env, sandbox.image(FAULTY))
        threading.Event().wait(3)  # 3 s more of samples, to see the canary's last answers
    assert report["status"] == "rolled_back", report["status"]  # a faulty version must never pass
    stage = next(s for s in report["stages"] if s["status"] == "failed")
    verdict_at = _epoch(stage["finished_at"])
    # the counts are cumulative since the load generator started: count from this run's first sample
    errors_before = sampler.samples[0][1].get(FAULTY, {}).get("500", 0)
    errors = [t for t, by in sampler.samples if by.get(FAULTY, {}).get("500", 0) > errors_before]
    served_before = sum(sampler.samples[0][1].get(FAULTY, {}).values())
    served = [(t, sum(by.get(FAULTY, {}).values()) - served_before) for t, by in sampler.samples]
    final = served[-1][1]
    last_canary = next(t for t, n in served if n == final)
    return {
        "wall_s": round(wall, 2),
        "failed_stage": stage["name"],
        "time_to_detect_s": round(verdict_at - errors[0], 2) if errors else None,
        "reason": stage["reason"],
        "time_to_rollback_s": round(max(0.0, last_canary - verdict_at), 2),
        "canary_answers": final,
    }


def healthy_run(env: dict[str, str], sandbox) -> dict:
    sandbox.reset()
    wall, report = release(env, sandbox.image(HEALTHY))
    if report["status"] != "promoted":
        failed = [(st["name"], st["reason"]) for st in report["stages"] if st["status"] == "failed"]
        return {"wall_s": round(wall, 2), "status": report["status"], "failed": failed}
    return {
        "wall_s": round(wall, 2),
        "run_duration_s": report["duration_s"],
        "bake_s": BAKE_S,
        "overhead_s": round(report["duration_s"] - BAKE_S, 2),
    }


def _epoch(value: str | float) -> float:
    from datetime import datetime

    return value if isinstance(value, int | float) else datetime.fromisoformat(value).timestamp()


def summarize(rows: list[dict], key: str) -> dict:
    values = [r[key] for r in rows if r.get(key) is not None]
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": round(statistics.median(values), 2), "min": min(values), "max": max(values)}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, running_sandbox(Path(tmp) / "sandbox") as sandbox:
        tmp_path = Path(tmp)
        prometheus = sandbox.state()["prometheus"]["url"].rsplit(":", 1)
        env = {
            **os.environ,
            "OPSDAG_STATE_DIR": str(tmp_path / "state"),
            "OPSDAG_INCLUDE_DIR": str(make_include(tmp_path)),
            "OPSDAG_SANDBOX_DIR": str(sandbox.root),
            "OPSDAG_REPORTS_DIR": str(tmp_path / "reports"),
            "AIRFLOW_CONN_PROMETHEUS_DEFAULT": json.dumps(
                {"conn_type": "http", "host": prometheus[0].split("//")[1], "port": int(prometheus[1])}
            ),
        }
        faulty = []
        healthy = []
        for i in range(RUNS):
            faulty.append(faulty_run(env, sandbox))
            print(f"faulty run {i + 1}: {faulty[-1]}", flush=True)
            healthy.append(healthy_run(env, sandbox))
            print(f"healthy run {i + 1}: {healthy[-1]}", flush=True)
    result = {
        "benchmark": "release_canary_sandbox",
        "steps": STEPS,
        "load_rps": 50,
        "runs": RUNS,
        "time_to_detect_s": summarize(faulty, "time_to_detect_s"),
        "time_to_rollback_s": summarize(faulty, "time_to_rollback_s"),
        "overhead_s": summarize([h for h in healthy if "overhead_s" in h], "overhead_s"),
        "healthy_not_promoted": [h for h in healthy if "overhead_s" not in h],
        "faulty_runs": faulty,
        "healthy_runs": healthy,
    }
    out = ROOT / "bench" / "results" / "release.json"
    out.write_text(json.dumps(result, indent=2))
    headline = ("time_to_detect_s", "time_to_rollback_s", "overhead_s")
    print(json.dumps({k: result[k] for k in headline}, indent=2))
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

"""How long Airflow takes to parse the release DAG file with 1, 10 and 100 service specs.

Each size runs in a fresh interpreter (Airflow imported first, not timed), parses
dags/releases.py through a DagBag several times, and reports the best and median wall
time per file and per DAG. Writes bench/results/parse.json.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = (1, 10, 100)
REPEATS = 5

PROBE = textwrap.dedent(
    """
    import json, sys, time
    from airflow.dag_processing.dagbag import DagBag
    times = []
    for _ in range(int(sys.argv[2])):
        start = time.perf_counter()
        bag = DagBag(sys.argv[1])
        times.append(time.perf_counter() - start)
        assert not bag.import_errors, bag.import_errors
    print(json.dumps({"times": times, "dags": len(bag.dags)}))
    """
)


def make_include(directory: Path, services: int) -> None:
    template = (ROOT / "include" / "services" / "demo-api.yaml").read_text()
    (directory / "services").mkdir(parents=True)
    for i in range(services):
        name = f"svc-{i:03d}"
        (directory / "services" / f"{name}.yaml").write_text(
            template.replace("name: demo-api", f"name: {name}")
        )


def measure(services: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        include = Path(tmp) / "include"
        make_include(include, services)
        env = dict(os.environ, PYTHONPATH=str(ROOT / "plugins"), OPSDAG_INCLUDE_DIR=str(include))
        env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
        out = subprocess.run(
            [sys.executable, "-c", PROBE, str(ROOT / "dags" / "releases.py"), str(REPEATS)],
            capture_output=True, text=True, env=env, check=True, timeout=600,
        )  # fmt: skip
        result = json.loads(out.stdout.strip().splitlines()[-1])
    times = result["times"][1:] or result["times"]  # the first parse warms caches
    median = statistics.median(times)
    return {
        "services": services,
        "dags": result["dags"],
        "file_seconds_median": round(median, 4),
        "file_seconds_best": round(min(times), 4),
        "per_dag_ms_median": round(1000 * median / result["dags"], 2),
        "runs": len(times),
    }


def main() -> None:
    rows = [measure(n) for n in SIZES]
    print(f"{'services':>8} {'dags':>5} {'file median s':>14} {'file best s':>11} {'per DAG ms':>10}")
    for r in rows:
        print(
            f"{r['services']:>8} {r['dags']:>5} {r['file_seconds_median']:>14} "
            f"{r['file_seconds_best']:>11} {r['per_dag_ms_median']:>10}"
        )
    out = ROOT / "bench" / "results" / "parse.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"benchmark": "dag_parse", "python": sys.version.split()[0], "results": rows}, indent=2)
    )
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

"""The release bench's second column: ``airflow dags test`` (no scheduler, triggers in-process), canary only.

Runs on the same sandbox after the REST runs, with airflow standalone's environment
(opsdag.dev.airflow_env), so only with ``--airflow standalone``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import release_delays as delays
import release_figures as figures
from common import log
from release_plan import bench_error, say
from release_setup import CountsSampler

ROOT = Path(__file__).resolve().parents[1]
DAG = "release__demo-api"
RUN_TIMEOUT = 300.0

XCOM_READER = """
import json, sys
from airflow.models.dagrun import DagRun
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
with create_session() as session:
    run = session.query(DagRun).filter(DagRun.dag_id == sys.argv[1]).order_by(DagRun.id.desc()).first()
    rows = session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids=sys.argv[1])).all()
    xcoms = {f"{x.task_id}.{x.key}": XComModel.deserialize_value(x) for x in rows}
    iso = lambda d: d.isoformat() if d else None
    tis = [{"task_id": t.task_id, "state": str(t.state), "map_index": t.map_index,
            "hostname": t.hostname, "pid": t.pid,
            "start_date": iso(t.start_date), "end_date": iso(t.end_date),
            "scheduled_when": iso(t.scheduled_dttm), "queued_when": iso(t.queued_dttm)}
           for t in run.get_task_instances(session=session)]
print(json.dumps({"xcoms": xcoms, "task_instances": tis}, default=str))
"""


def dags_test_run(sandbox, sampler: CountsSampler, ups: dict, tag: str, kind: str | None) -> dict:
    from opsdag.dev.airflow_env import airflow_environment

    sandbox.reset()
    mark = sampler.mark()
    env = {**os.environ, **airflow_environment()}
    started = time.time()
    conf = json.dumps({"image": sandbox.image(tag), "strategy": "canary", "reason": "bench"})
    proc = subprocess.run(
        [str(ROOT / "scripts" / "airflow"), "dags", "test", DAG, "-c", conf],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    wall = time.time() - started
    samples = sampler.since(mark, until=time.time() + 1.0)
    reader = subprocess.run(
        [sys.executable, "-c", XCOM_READER, DAG],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    data = json.loads(reader.stdout.strip().splitlines()[-1])
    xcoms = data["xcoms"]
    summary = xcoms.get("report.summary") or {}
    if not summary.get("json"):
        return {"tag": tag, "status": "no report", "output": (proc.stdout + proc.stderr)[-2000:]}
    report = json.loads(Path(summary["json"]).read_text())
    gates = {
        k: v
        for k, v in xcoms.items()
        if k.endswith((".gate.verdict", ".deploy.readiness", "rollback.rollback"))
    }
    row = figures.run_figures("canary", kind, report, gates, data["task_instances"], samples)
    row["scheduling_gaps"] = delays.gaps(data["task_instances"], ups)
    return {**row, "tag": tag, "cli_wall_s": figures.r(wall), "load_1m": round(os.getloadavg()[0], 2)}


def dags_test_phase(runs: int, sandbox, sampler: CountsSampler, ups: dict) -> list[dict]:
    rows = []
    faults = [figures.ERRORS, figures.SLOW]
    for i in range(runs):
        for tag, kind in ((figures.HEALTHY_TAG, None), (figures.FAULT_KINDS[faults[i % 2]], faults[i % 2])):
            try:
                row = dags_test_run(sandbox, sampler, ups, tag, kind)
            except Exception as exc:
                row = bench_error("canary", tag, kind, exc)
            rows.append(row)
            log(f"dags test {len(rows)}/{2 * runs} canary {tag}: {say(row)}")
    return rows

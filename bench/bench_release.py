"""Release benchmark on the real path: ``airflow standalone`` (scheduler + triggerer), runs through REST.

(Over 300 lines: the bench's procedure, its two runners and the Airflow log readers in one
place; the figures, the table and the setting up are in release_figures/_table/_setup.py.)

A sandbox and an ``airflow standalone`` of its own (free loopback ports, temporary
directories, stopped by PID/process group at the end), a copy of include/ with short
bakes (canary 10/25/50/100 % x 5 s; blue-green 8 s + 8 s, scale-down delay 3 s, preview
share 0.3; rolling 8 s per batch; every metric measured every 2 s after its 4 s initial
delay) and only the demo-api service (no backup or runbook DAG competes for the scheduler).
For each strategy, BENCH_RUNS healthy runs (1.1.0) and BENCH_RUNS faulty ones cycling
errors (1.2.0-errors), latency (1.3.0-slow), crash at start (1.4.0-crash) and late-onset
errors (1.5.0-late), each triggered with ``POST /api/v2/dags/release__demo-api/dagRuns``
from a fleet reset to 1.0.0 on 2 instances. Figures (bench/release_figures.py):

- time to detect: first error (or slow) answer of the faulty version at the load
  generator, either route -> the failing verdict's ``decided_at``;
- verdict -> router: ``decided_at`` -> the trigger's abort done (``abort.done_at``, the split read back);
- time to safety: ``decided_at`` -> the later of the router at 0 (abort done) and the
  last answer from the faulty version on the route the gate judged (main; the preview
  route for blue-green's pre-promotion gate); after it, 100 % of the answers are the old version's;
- exposure: first -> last main-route answer of the faulty version (0 if none);
- overhead: a healthy run's duration (run start -> report) minus its configured bakes;
- false rollbacks (healthy not promoted, with why) and faulty versions promoted.

The load generator is restarted with ``--interval BENCH_COUNTS_INTERVAL`` (0.1 s; the
sandbox starts it with 0.5 s): that is the resolution of every figure read from the
counts. Then a second column, ``airflow dags test`` (no scheduler, triggers in-process):
canary only, BENCH_DAGS_TEST_RUNS healthy and as many faulty (errors, latency) runs.

    .venv/bin/python bench/bench_release.py                      # the whole bench (~30 min)
    BENCH_RUNS=1 BENCH_STRATEGIES=canary BENCH_FAULTS=errors BENCH_DAGS_TEST_RUNS=0 \
        BENCH_OUT=/tmp/release.json .venv/bin/python bench/bench_release.py   # one pair, ~3 min

Writes bench/results/release.json (BENCH_OUT overrides) and prints a table against the goals;
keeps Airflow's task logs, the reports and the sandbox's logs in .state/bench/release (BENCH_LOGS).
A task the scheduler failed as 'task-state-changed-externally' is named in its run's row.
``--resummarize [result.json]`` rebuilds a result's summary and table from its runs.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import common  # noqa: E402
import release_figures as figures  # noqa: E402
from common import log  # noqa: E402
from release_setup import CountsSampler, finer_counts, make_include  # noqa: E402
from release_table import BENCH_ERROR, FIGURES, GOALS, headline, summarize, table  # noqa: E402
from support.sandbox import running_sandbox  # noqa: E402
from support.waiting import wait_for  # noqa: E402

DAG = "release__demo-api"
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
STRATEGIES = [s for s in os.environ.get("BENCH_STRATEGIES", "canary,bluegreen,rolling").split(",") if s]
DAGS_TEST_RUNS = int(os.environ.get("BENCH_DAGS_TEST_RUNS", "2"))
COUNTS_INTERVAL = float(os.environ.get("BENCH_COUNTS_INTERVAL", "0.1"))
OUT = Path(os.environ.get("BENCH_OUT", ROOT / "bench" / "results" / "release.json"))
LOGS = Path(os.environ.get("BENCH_LOGS", ROOT / ".state" / "bench" / "release"))
RUN_TIMEOUT = 300.0
FAULT_CYCLE = os.environ.get("BENCH_FAULTS", "errors,slow,crash,late").split(",")


def plan() -> list[tuple[str, str, str | None]]:
    """(strategy, tag, fault kind or None) in run order: healthy and faulty alternate."""
    runs = []
    for strategy in STRATEGIES:
        for i in range(RUNS):
            runs.append((strategy, figures.HEALTHY_TAG, None))
            kind = FAULT_CYCLE[i % len(FAULT_CYCLE)]
            runs.append((strategy, figures.FAULT_KINDS[kind], kind))
    return runs


# -- the REST path ------------------------------------------------------------------------


def rest_run(client, sandbox, sampler: CountsSampler, strategy: str, tag: str, kind: str | None) -> dict:
    sandbox.reset()
    mark = sampler.mark()
    triggered = time.time()
    conf = {"image": sandbox.image(tag), "strategy": strategy, "reason": "bench"}
    run_id = client.trigger(DAG, conf)["dag_run_id"]
    try:
        run = wait_for(
            lambda: (r := client.dag_run(DAG, run_id))["state"] in ("success", "failed") and r,
            RUN_TIMEOUT,
            interval=1.0,
            what=f"run {run_id} ended",
        )
    except TimeoutError:
        # Ended by hand so that the next run (max_active_runs=1) is not queued behind it.
        path = f"/dags/{DAG}/dagRuns/{quote(run_id, safe='')}"
        client.request("PATCH", path, json={"state": "failed"})
        raise
    samples = sampler.since(mark, until=time.time() + 1.0)
    tis = client.task_instances(DAG, run_id)
    xcoms = {}
    for ti in tis:
        task_id, state = ti["task_id"], ti["state"]
        if task_id.endswith(".gate") and state in ("success", "failed"):
            xcoms[f"{task_id}.verdict"] = client.xcom(DAG, run_id, task_id, "verdict")
        elif task_id.endswith((".deploy", ".replace")) and state == "failed":
            xcoms[f"{task_id}.readiness"] = client.xcom(DAG, run_id, task_id, "readiness")
    tries = {ti["task_id"]: ti.get("try_number") or 1 for ti in tis}
    for key, value in list(xcoms.items()):
        task_id, _, name = key.rpartition(".")
        if value is None or tries.get(task_id, 1) > 1:
            # Airflow failed a resumed try before it could push what its trigger decided (and
            # a retry may have replaced that XCom): every try's event, from the triggerer's log.
            for attempt, event in trigger_events(run_id, task_id).items():
                xcoms[f"{task_id}.{name}@{attempt}"] = {**event, "from": "trigger log"}
    xcoms["rollback.rollback"] = client.xcom(DAG, run_id, "rollback", "rollback")
    summary = client.xcom(DAG, run_id, "report", "summary") or {}
    report = json.loads(Path(summary["json"]).read_text()) if summary.get("json") else {"status": "no report"}
    row = figures.run_figures(strategy, kind, report, xcoms, tis, samples)
    row.update(
        state_mismatch=state_mismatches(run_id),
        run_id=run_id,
        tag=tag,
        trigger_to_start_s=figures.r(figures.epoch(run.get("start_date")) - triggered),
        trigger_to_end_s=figures.r(figures.epoch(run.get("end_date")) - triggered),
        load_1m=round(os.getloadavg()[0], 2),
    )
    return row


def trigger_events(run_id: str, task_id: str) -> dict[int, dict]:
    """The event each try's trigger fired (by try number), from the triggerer's log of that task."""
    from opsdag import paths

    folder = (
        paths.state_dir() / "airflow" / "logs" / f"dag_id={DAG}" / f"run_id={run_id}" / f"task_id={task_id}"
    )
    events = {}
    for path in sorted(folder.glob("attempt=*.log.trigger.*.log")):
        attempt = int(path.name.split("=", 1)[1].split(".", 1)[0])
        for line in path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            result = str(entry.get("result") or "")
            if entry.get("event") == "Trigger fired event" and result.startswith("TriggerEvent<"):
                try:
                    events[attempt] = ast.literal_eval(result.removeprefix("TriggerEvent<").removesuffix(">"))
                except (ValueError, SyntaxError):
                    continue
    return events


def state_mismatches(run_id: str) -> list[str]:
    """Tasks of ``run_id`` the scheduler failed as 'task-state-changed-externally' (standalone's log)."""
    from opsdag import paths

    log_file = paths.state_dir() / "airflow" / "logs" / "airflow-standalone.log"
    pattern = re.compile(rf"<TaskInstance: {re.escape(DAG)}\.(\S+) {re.escape(run_id)} \[(\w+)\]")
    found = []
    with open(log_file, errors="replace") as lines:
        for line in lines:
            if "task-state-changed-externally" in line and (m := pattern.search(line)):
                found.append(f"{m.group(1)} (was {m.group(2)})")
    return list(dict.fromkeys(found))


def rest_phase(sandbox, sampler: CountsSampler) -> list[dict]:
    from opsdag.airflow_api import AirflowClient
    from opsdag.dev import standalone

    log("starting airflow standalone (its own home: a fresh metadata database)")
    started = time.monotonic()
    try:
        credentials = standalone.start(progress=lambda m: log(f"  {m}"), timeout=420)
        log(f"airflow standalone ready in {time.monotonic() - started:.0f} s")
        rows: list[dict] = []
        runs = plan()
        with AirflowClient(credentials, timeout=60) as client:
            client.unpause(DAG)
            for n, (strategy, tag, kind) in enumerate(runs, start=1):
                try:
                    row = rest_run(client, sandbox, sampler, strategy, tag, kind)
                except Exception as exc:  # one broken run must not lose the others' figures
                    row = bench_error(strategy, tag, kind, exc)
                rows.append(row)
                log(f"REST {n}/{len(runs)} {strategy} {tag}: {say(row)}")
        return rows
    finally:
        standalone.stop(progress=lambda m: log(f"  {m}"))


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
    if row.get("status") != "promoted" and (row.get("kind") is None or row["status"] == "bench error"):
        parts.append(f"why: {row.get('why')}")
    parts.append(f"load {os.getloadavg()[0]:.2f}")
    return ", ".join(parts)


# -- the `airflow dags test` column ---------------------------------------------------------

XCOM_READER = """
import json, sys
from airflow.models.dagrun import DagRun
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
with create_session() as session:
    run = session.query(DagRun).filter(DagRun.dag_id == sys.argv[1]).order_by(DagRun.id.desc()).first()
    rows = session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids=sys.argv[1])).all()
    xcoms = {f"{x.task_id}.{x.key}": XComModel.deserialize_value(x) for x in rows}
    tis = [{"task_id": t.task_id, "state": str(t.state),
            "start_date": t.start_date.isoformat() if t.start_date else None,
            "end_date": t.end_date.isoformat() if t.end_date else None}
           for t in run.get_task_instances(session=session)]
print(json.dumps({"xcoms": xcoms, "task_instances": tis}, default=str))
"""


def dags_test_run(sandbox, sampler: CountsSampler, tag: str, kind: str | None) -> dict:
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
    return {**row, "tag": tag, "cli_wall_s": figures.r(wall), "load_1m": round(os.getloadavg()[0], 2)}


def dags_test_phase(sandbox, sampler: CountsSampler) -> list[dict]:
    rows = []
    faults = [figures.ERRORS, figures.SLOW]
    for i in range(DAGS_TEST_RUNS):
        for tag, kind in ((figures.HEALTHY_TAG, None), (figures.FAULT_KINDS[faults[i % 2]], faults[i % 2])):
            try:
                row = dags_test_run(sandbox, sampler, tag, kind)
            except Exception as exc:
                row = bench_error("canary", tag, kind, exc)
            rows.append(row)
            log(f"dags test {len(rows)}/{2 * DAGS_TEST_RUNS} canary {tag}: {say(row)}")
    return rows


# -- main -----------------------------------------------------------------------------------


def settings() -> dict[str, Any]:
    return {
        "canary_steps": figures.CANARY_STEPS,
        "bluegreen": figures.BLUEGREEN,
        "rolling": {
            "max_surge": 1,
            "max_unavailable": 0,
            "bake": f"{figures.ROLLING_BAKE_S}s",
            "instances": 2,
        },
        "metrics": {"interval_s": figures.METRIC_INTERVAL_S, "initial_delay_s": figures.INITIAL_DELAY_S},
        "configured_bake_s": figures.BAKE_S,
        "load_rps": 50,
        "runs_per_kind": RUNS,
        "strategies": STRATEGIES,
        "fault_cycle": [f"{k} ({figures.FAULT_KINDS[k]})" for k in FAULT_CYCLE],
        "counts_interval_s": COUNTS_INTERVAL,
        # How late Airflow's task supervisor may notice its task's exit (see the state mismatches).
        "airflow_workers_min_heartbeat_interval_s": float(
            os.environ.get("AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL", "5")
        ),
    }


def keep_logs(tmp_path: Path) -> None:
    """Airflow's task logs, the reports and the sandbox's logs, kept in LOGS (the temp dir goes)."""
    shutil.rmtree(LOGS, ignore_errors=True)
    for part in ("state/airflow/logs", "state/reports", "sandbox/logs"):
        if (tmp_path / part).is_dir():
            shutil.copytree(tmp_path / part, LOGS / part, ignore_dangling_symlinks=True)
    log(f"logs and reports kept in {LOGS}")


def main() -> None:
    started = time.monotonic()
    load_start = [round(x, 2) for x in os.getloadavg()]
    log(
        f"release bench: {len(plan())} REST runs ({', '.join(STRATEGIES)}), "
        f"{2 * DAGS_TEST_RUNS} dags-test runs; load average {load_start}"
    )
    with tempfile.TemporaryDirectory(prefix="opsdag-bench-release-") as tmp:
        tmp_path = Path(tmp)
        os.chmod(tmp_path, 0o711)  # the sandbox's PostgreSQL runs as the postgres user
        os.environ.update(
            {
                "OPSDAG_STATE_DIR": str(tmp_path / "state"),
                "OPSDAG_INCLUDE_DIR": str(make_include(tmp_path)),
                "OPSDAG_REPORTS_DIR": str(tmp_path / "state" / "reports"),
            }
        )
        log("starting the sandbox")
        with running_sandbox(tmp_path / "sandbox") as sandbox:
            os.environ["OPSDAG_SANDBOX_DIR"] = str(sandbox.root)
            finer_counts(sandbox, COUNTS_INTERVAL)
            with CountsSampler(sandbox.layout.counts_file, COUNTS_INTERVAL) as sampler:
                rest = rest_phase(sandbox, sampler)
                partial = {"rest_runs": rest}
                OUT.with_suffix(".partial.json").write_text(json.dumps(partial, indent=1))
                dags_test = dags_test_phase(sandbox, sampler) if DAGS_TEST_RUNS else []
        keep_logs(tmp_path)
    OUT.with_suffix(".partial.json").unlink(missing_ok=True)
    summary = summarize(rest, dags_test)
    result = {
        "benchmark": "release_sandbox_rest",
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": f"BENCH_RUNS={RUNS} BENCH_STRATEGIES={','.join(STRATEGIES)} "
        f"BENCH_DAGS_TEST_RUNS={DAGS_TEST_RUNS} .venv/bin/python bench/bench_release.py",
        "bench_wall_s": round(time.monotonic() - started),
        "machine": {**common.machine(), "load_average_1_5_15_at_start": load_start},
        "settings": settings(),
        "goals": GOALS,
        "resolution": {key: res for key, _label, _goal, res in FIGURES},
        "steps": figures.CANARY_STEPS,
        "load_rps": 50,
        "runs": RUNS,
        **headline(summary),
        "summary": summary,
        "rest_runs": rest,
        "dags_test_runs": dags_test,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result["summary"]))
    log(f"written to {OUT} in {result['bench_wall_s']} s")


def resummarize(path: Path) -> None:
    """Summary, headline keys and table again from a result's runs (after a change to the summary)."""
    result = json.loads(path.read_text())
    result["summary"] = summarize(result["rest_runs"], result["dags_test_runs"])
    result.update(headline(result["summary"]), goals=GOALS, resolution={k: r for k, _l, _g, r in FIGURES})
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result["summary"]))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--resummarize"]:
        resummarize(Path(sys.argv[2]) if len(sys.argv) > 2 else OUT)
    else:
        main()

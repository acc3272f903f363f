"""Release benchmark on the real path: runs through REST on ``airflow standalone`` or the cluster.

The procedure and the REST runner are here; the options and plan (release_plan.py), the
figures, the table, the setting up, the scheduling delay and the ``airflow dags test``
column (release_figures/_table/_setup/_delays/_dags_test.py) and the Airflow it runs on
(airflow_target.py) are apart.

A sandbox and an Airflow of its own (``--airflow standalone``: opsdag.dev.standalone;
``--airflow cluster``: opsdag.dev.cluster, CeleryExecutor, PostgreSQL, Redis, two schedulers,
two Celery workers), started after the sandbox (free loopback ports, temporary
directories, stopped by PID/process group at the end), a copy of include/ with short
bakes (canary 10/25/50/100 % x 5 s; blue-green 8 s + 8 s, scale-down delay 3 s, preview
share 0.3; rolling 8 s per batch; every metric measured every 2 s after its 4 s initial
delay) and only the demo-api service (no backup or runbook DAG competes for the scheduler).
For each strategy, ``--runs`` healthy runs (1.1.0) and as many faulty ones cycling
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
- false rollbacks (healthy not promoted, with why) and faulty versions promoted;
- scheduling delay (bench/release_delays.py): every run's gaps between a task's start and
  the end of the upstream it waited for; median, p95 and the worst pair.

The load generator is restarted with ``--interval BENCH_COUNTS_INTERVAL`` (0.1 s; the
sandbox starts it with 0.5 s): that is the resolution of every figure read from the
counts. Then, on standalone only, a second column, ``airflow dags test`` (no scheduler,
triggers in-process): canary only, ``--dags-test-runs`` healthy and as many faulty (errors,
latency) runs.

    .venv/bin/python bench/bench_release.py                      # the whole bench (~30 min)
    .venv/bin/python bench/bench_release.py --airflow cluster    # the same on the cluster
    .venv/bin/python bench/bench_release.py --airflow cluster --runs 1 --strategies canary \
        --faults errors --out /tmp/release.json                  # one pair, ~4 min

Writes bench/results/release.json (cluster: release_cluster.json; ``--out`` or BENCH_OUT
override) and prints a table against the goals, then the issue's figures (overhead of a
4-step canary, time to safety, scheduling delay) each next to its goal; keeps Airflow's
logs, the reports and the sandbox's logs in .state/bench/release (cluster: release_cluster;
BENCH_LOGS overrides). A task a scheduler failed as 'task-state-changed-externally' is named
in its run's row (from the schedulers' logs and Airflow's event log). ``--resummarize
[result.json]`` rebuilds a result's summary and table from its runs. The options' defaults
come from BENCH_RUNS, BENCH_STRATEGIES, BENCH_FAULTS and BENCH_DAGS_TEST_RUNS when set.
"""

from __future__ import annotations

import json
import os
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
import release_delays as delays  # noqa: E402
import release_figures as figures  # noqa: E402
from airflow_target import (  # noqa: E402
    Target,
    keep_logs,
    mismatch_events,
    state_mismatches,
    trigger_events,
)
from common import log  # noqa: E402
from release_dags_test import dags_test_phase  # noqa: E402
from release_plan import Options, bench_error, options, plan, say  # noqa: E402
from release_setup import CountsSampler, finer_counts, make_include  # noqa: E402
from release_table import FIGURES, GOALS, headline, summarize, table  # noqa: E402
from support.sandbox import running_sandbox  # noqa: E402
from support.waiting import wait_for  # noqa: E402

DAG = "release__demo-api"
COUNTS_INTERVAL = float(os.environ.get("BENCH_COUNTS_INTERVAL", "0.1"))
RUN_TIMEOUT = 300.0


# -- the REST path ------------------------------------------------------------------------


def rest_run(
    client,
    sandbox,
    sampler: CountsSampler,
    target: Target,
    ups: dict,
    strategy: str,
    tag: str,
    kind: str | None,
) -> dict:
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
            for attempt, event in trigger_events(target, DAG, run_id, task_id).items():
                xcoms[f"{task_id}.{name}@{attempt}"] = {**event, "from": "trigger log"}
    xcoms["rollback.rollback"] = client.xcom(DAG, run_id, "rollback", "rollback")
    summary = client.xcom(DAG, run_id, "report", "summary") or {}
    report = json.loads(Path(summary["json"]).read_text()) if summary.get("json") else {"status": "no report"}
    row = figures.run_figures(strategy, kind, report, xcoms, tis, samples)
    row.update(
        scheduling_gaps=delays.gaps(tis, ups),
        state_mismatch=list(
            dict.fromkeys(state_mismatches(target, DAG, run_id) + mismatch_events(client, DAG, run_id))
        ),
        run_id=run_id,
        tag=tag,
        trigger_to_start_s=figures.r(figures.epoch(run.get("start_date")) - triggered),
        trigger_to_end_s=figures.r(figures.epoch(run.get("end_date")) - triggered),
        load_1m=round(os.getloadavg()[0], 2),
    )
    return row


def rest_phase(opts: Options, sandbox, sampler: CountsSampler) -> tuple[list[dict], dict[str, list[str]]]:
    """The REST runs' rows, and the DAG's upstream tasks (for the dags-test column's delays)."""
    from opsdag.airflow_api import AirflowClient

    target = opts.target
    log(f"starting airflow {target.name} (its own home: a fresh metadata database)")
    started = time.monotonic()
    try:
        credentials = target.start(progress=lambda m: log(f"  {m}"))
        log(f"airflow {target.name} ready in {time.monotonic() - started:.0f} s")
        rows: list[dict] = []
        runs = plan(opts)
        with AirflowClient(credentials, timeout=60) as client:
            client.unpause(DAG)
            ups = delays.upstreams(client, DAG)
            for n, (strategy, tag, kind) in enumerate(runs, start=1):
                try:
                    row = rest_run(client, sandbox, sampler, target, ups, strategy, tag, kind)
                except Exception as exc:  # one broken run must not lose the others' figures
                    row = bench_error(strategy, tag, kind, exc)
                rows.append(row)
                log(f"REST {n}/{len(runs)} {strategy} {tag}: {say(row)}")
        return rows, ups
    finally:
        target.stop(progress=lambda m: log(f"  {m}"))


# -- main -----------------------------------------------------------------------------------


def settings(opts: Options) -> dict[str, Any]:
    airflow = opts.target.describe()
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
        "runs_per_kind": opts.runs,
        "strategies": opts.strategies,
        "fault_cycle": [f"{k} ({figures.FAULT_KINDS[k]})" for k in opts.faults],
        "counts_interval_s": COUNTS_INTERVAL,
        # How late Airflow's task supervisor may notice its task's exit (see the state mismatches):
        # what the Airflow it ran on was given (airflow_env / the cluster's topology).
        "airflow_workers_min_heartbeat_interval_s": airflow["min_heartbeat_interval_s"],
        "airflow": airflow,
    }


def main(opts: Options) -> None:
    started = time.monotonic()
    load_start = [round(x, 2) for x in os.getloadavg()]
    log(
        f"release bench on airflow {opts.target.name}: {len(plan(opts))} REST runs "
        f"({', '.join(opts.strategies)}), {2 * opts.dags_test_runs} dags-test runs; load average {load_start}"
    )
    partial_file = opts.out.with_suffix(".partial.json")
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
        log("starting the sandbox (before Airflow: its processes read the sandbox's connections)")
        with running_sandbox(tmp_path / "sandbox") as sandbox:
            os.environ["OPSDAG_SANDBOX_DIR"] = str(sandbox.root)
            finer_counts(sandbox, COUNTS_INTERVAL)
            with CountsSampler(sandbox.layout.counts_file, COUNTS_INTERVAL) as sampler:
                rest, ups = rest_phase(opts, sandbox, sampler)
                partial_file.parent.mkdir(parents=True, exist_ok=True)
                partial_file.write_text(json.dumps({"rest_runs": rest}, indent=1))
                dags_test = dags_test_phase(opts.dags_test_runs, sandbox, sampler, ups)
        keep_logs(opts.target, tmp_path, opts.logs, log)
    partial_file.unlink(missing_ok=True)
    summary = summarize(rest, dags_test)
    delays.add_scheduling_delay(summary, rest, dags_test)
    result = {
        "benchmark": "release_sandbox_rest",
        "airflow": opts.target.name,
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": opts.command(),
        "bench_wall_s": round(time.monotonic() - started),
        "machine": {**common.machine(), "load_average_1_5_15_at_start": load_start},
        "settings": settings(opts),
        "goals": GOALS,
        "resolution": {key: res for key, _label, _goal, res in FIGURES},
        "steps": figures.CANARY_STEPS,
        "load_rps": 50,
        "runs": opts.runs,
        **headline(summary),
        "scheduling_delay_s": summary["rest"]["all"]["scheduling_delay_s"],
        "summary": summary,
        "rest_runs": rest,
        "dags_test_runs": dags_test,
    }
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result["summary"]))
    print(delays.issue_figures(result["summary"], opts.target.name))
    log(f"written to {opts.out} in {result['bench_wall_s']} s")


def resummarize(path: Path) -> None:
    """Summary, headline keys and table again from a result's runs (after a change to the summary)."""
    result = json.loads(path.read_text())
    result["summary"] = summarize(result["rest_runs"], result["dags_test_runs"])
    delays.add_scheduling_delay(result["summary"], result["rest_runs"], result["dags_test_runs"])
    result.update(headline(result["summary"]), goals=GOALS, resolution={k: r for k, _l, _g, r in FIGURES})
    result["scheduling_delay_s"] = result["summary"]["rest"]["all"]["scheduling_delay_s"]
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result["summary"]))
    print(delays.issue_figures(result["summary"], result.get("airflow", "standalone")))


if __name__ == "__main__":
    bench_options, to_resummarize = options(__doc__)
    if to_resummarize is not None:
        resummarize(Path(to_resummarize))
    else:
        main(bench_options)

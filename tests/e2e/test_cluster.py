# ruff: noqa: F811  (the cluster fixture imported from cluster_support is redefined as an argument)
"""opsdag on a distributed Airflow: the CeleryExecutor cluster of ``scripts/cluster``, with faults.

Real processes: PostgreSQL metadata database, Redis broker, API server, two schedulers, a DAG
processor, a triggerer and two Celery workers, all on loopback. Releases go through the REST
API as users trigger them; faults are ``kill -9`` of a process group the cluster started.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cluster_support import RELEASE, assert_stable_only, cluster, tries, wait_task_state  # noqa: F401
from support.waiting import wait_for

from opsdag.dev.cluster import control, topology

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]
ROOT = Path(__file__).resolve().parents[2]
CANARY_STEPS = ("canary.stage_25", "canary.stage_50", "canary.stage_75", "canary.stage_100")


@pytest.fixture(autouse=True)
def whole_cluster_after(cluster):
    """A test that failed half-way still leaves every component running for the next one."""
    yield
    if not all(p["running"] for p in control.status()["processes"].values()):
        cluster.restart_missing()


def report(cluster, run_id: str) -> dict:
    path = cluster.state / "reports" / RELEASE / f"{run_id}.json"
    return json.loads(wait_for(lambda: path.exists() and path.read_text(), 30, what=f"report {path.name}"))


def test_up_starts_every_component_once_and_keeps_secrets_off_command_lines(cluster) -> None:
    status = control.status()
    assert status["url"] == cluster.credentials.url
    assert all(p["running"] for p in status["processes"].values()), status
    pids = {name: p["pid"] for name, p in status["processes"].items() if p.get("pid")}
    assert set(pids) == {c.name for c in topology.COMPONENTS}

    control.up(progress=lambda _m: None)  # a second `up` changes nothing
    assert {n: p["pid"] for n, p in control.status()["processes"].items() if p.get("pid")} == pids

    credentials = control.credentials_path()
    assert credentials.stat().st_mode & 0o777 == 0o600
    assert set(json.loads(credentials.read_text())) == {"url", "username", "password"}
    secrets = [f.read_text().strip() for f in (control.home() / "secrets").iterdir()]
    secrets.append(cluster.credentials.password)
    for pid in pids.values():
        seen = Path(f"/proc/{pid}/cmdline").read_bytes() + Path(f"/proc/{pid}/environ").read_bytes()
        assert not [s for s in secrets if s.encode() in seen], f"a secret in the command line or env of {pid}"


def test_a_healthy_and_a_faulty_release_end_to_end(cluster, sandbox) -> None:
    sandbox.reset()
    env = {
        **os.environ,
        "OPSDAG_AIRFLOW_CREDENTIALS": str(control.credentials_path()),
        "PYTHONPATH": str(ROOT / "plugins"),
    }

    def release(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "opsdag", "release", "demo-api", *args, "--wait"]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)

    good = release("--image", sandbox.image("1.1.0"), "--reason", "cluster e2e")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "release promoted" in good.stdout
    assert_stable_only(sandbox, "1.1.0")

    bad = release("--image", sandbox.image("1.2.0-errors"))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAILED: error-rate" in bad.stdout and "release rolled_back" in bad.stdout
    assert_stable_only(sandbox, "1.1.0")
    sandbox.reset()


def test_a_backup_and_the_drill_it_starts_end_to_end(cluster) -> None:
    with cluster.client() as client:
        before = {r["dag_run_id"] for r in client.request("GET", "/dags/drill__demo-db/dagRuns")["dag_runs"]}
        backup = client.trigger("backup__demo-db", {})["dag_run_id"]
    assert cluster.wait_end("backup__demo-db", backup, 300)["state"] == "success"
    stored = (cluster.backups / "demo-db").glob("*/manifest.json")
    manifests = [json.loads(m.read_text()) for m in stored]
    # (the scheduler may also have started the DAG's latest scheduled run when it was unpaused)
    assert [m for m in manifests if m["run"]["run_id"] == backup], manifests

    with cluster.client() as client:  # the new backup's Asset starts the drill
        drill = wait_for(
            lambda: [
                r
                for r in client.request("GET", "/dags/drill__demo-db/dagRuns")["dag_runs"]
                if r["dag_run_id"] not in before
            ],
            120,
            what="the drill started by the backup",
        )[0]
    assert cluster.wait_end("drill__demo-db", drill["dag_run_id"], 300)["state"] == "success"
    texts = json.dumps(cluster.slack.wait_for(2, timeout=30))
    assert "demo-db" in texts


def test_a_worker_killed_during_a_stage_task_leaves_a_true_state(cluster, sandbox) -> None:
    """kill -9 of the Celery worker (its whole process group) while it runs a canary stage's task."""
    sandbox.reset()
    run_id = cluster.release(sandbox.image("1.1.0"))
    killed: tuple[str, str] | None = None
    deadline = time.monotonic() + 240
    while killed is None and time.monotonic() < deadline:
        tasks = cluster.tasks(RELEASE, run_id)
        assert tasks.get("outcome", {}).get("state") not in ("success", "failed"), (
            "the release ended before a stage's task could be caught running on a worker"
        )
        for task_id, ti in tasks.items():
            if not (task_id.startswith("canary.") and ti["state"] == "running" and ti.get("pid")):
                continue
            worker = cluster.component_of(ti["pid"])
            if worker not in topology.WORKERS:
                continue
            control.kill(worker)
            # a hit: the task could not end once its worker was gone
            if cluster.tasks(RELEASE, run_id)[task_id]["state"] == "running":
                killed = (worker, task_id)
            else:
                cluster.restart_missing()
            break
        time.sleep(0.1)
    assert killed, "no canary task was caught running on a worker"
    worker, victim = killed

    run = cluster.wait_end(RELEASE, run_id, 300)
    ti = cluster.tasks(RELEASE, run_id)[victim]
    # truthful: the task failed (no retries), or was retried and succeeded on its second try
    assert ti["state"] == "failed" or (ti["state"] == "success" and ti["try_number"] == 2), ti
    outcome = report(cluster, run_id)["status"]
    print(
        f"killed {worker} while it ran {victim}: the task ended {ti['state']} (try {ti['try_number']}), "
        f"the release {outcome}"
    )
    if run["state"] == "success":
        assert outcome == "promoted"
        assert_stable_only(sandbox, "1.1.0")
    else:
        assert outcome == "rolled_back", outcome
        assert_stable_only(sandbox, "1.0.0")
    cluster.restart_missing()
    assert control.status()["processes"][worker]["running"]
    sandbox.reset()


def test_a_deferred_gate_survives_a_triggerer_restart_and_no_step_runs_twice(cluster, sandbox) -> None:
    sandbox.reset()
    run_id = cluster.release(sandbox.image("1.1.0"))
    wait_task_state(cluster, run_id, "canary.stage_25.gate", "deferred")
    control.kill("triggerer")
    cluster.restart_missing()  # a new triggerer picks the gate's trigger up

    run = cluster.wait_end(RELEASE, run_id, 300)
    assert run["state"] == "success"
    assert report(cluster, run_id)["status"] == "promoted"
    tasks = cluster.tasks(RELEASE, run_id)
    assert tasks["canary.stage_25.gate"]["state"] == "success"
    assert {t: n for t, n in tries(cluster, run_id).items() if n > 1} == {}
    assert_stable_only(sandbox, "1.1.0")
    sandbox.reset()


def test_the_other_scheduler_carries_a_release_when_one_is_killed(cluster, sandbox) -> None:
    sandbox.reset()
    run_id = cluster.release(sandbox.image("1.1.0"))
    wait_task_state(cluster, run_id, "canary.stage_25.gate", "deferred")
    control.kill("scheduler-1")

    run = cluster.wait_end(RELEASE, run_id, 300)
    assert not control.status()["processes"]["scheduler-1"]["running"]  # scheduler-2 did it alone
    assert run["state"] == "success"
    assert {t: n for t, n in tries(cluster, run_id).items() if n > 1} == {}
    assert_stable_only(sandbox, "1.1.0")
    cluster.restart_missing()
    sandbox.reset()


def test_ten_rest_triggers_within_a_second_run_one_at_a_time_and_none_is_lost(cluster, sandbox) -> None:
    """Ten requests for one service at once: ten runs recorded, never two active, all ended.

    Each asks for a version the sandbox does not declare, so each run is short (refused by
    its first task): what is checked is Airflow's queue, not the release itself.
    """
    sandbox.reset()
    images = [f"registry.opsdag.local/demo-api:9.9.{n}" for n in range(10)]
    run_ids: list[str] = []
    lock = threading.Lock()

    def trigger(image: str) -> None:
        with cluster.client() as client:
            run_id = client.trigger(RELEASE, {"image": image})["dag_run_id"]
        with lock:
            run_ids.append(run_id)

    started = time.monotonic()
    threads = [threading.Thread(target=trigger, args=(image,)) for image in images]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert time.monotonic() - started < 5 and len(run_ids) == 10  # all recorded at once

    runs = [cluster.wait_end(RELEASE, run_id, 600) for run_id in run_ids]
    with cluster.client() as client:
        confs = {client.dag_run(RELEASE, r)["conf"]["image"] for r in run_ids}
    assert confs == set(images)  # none lost, none mixed up
    spans = sorted((r["start_date"], r["end_date"]) for r in runs)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, f"two releases of one service were active at once: {spans}"
    assert all(report(cluster, r)["status"] == "refused" for r in run_ids)
    assert_stable_only(sandbox, "1.0.0")

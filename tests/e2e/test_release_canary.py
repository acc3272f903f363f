"""Releases of demo-api on the sandbox, end to end: real HAProxy, Prometheus, demo-app fleet."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest
from support.slack_server import SlackRecorder, dead_connection_json
from support.waiting import wait_for

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
STAGES = ["stage_25", "stage_50", "stage_75", "stage_100"]


def traffic(sandbox) -> dict:
    status = sandbox.status()
    return {
        "stable": status["stable"]["version"] if status.get("stable") else None,
        "canary": status["canary"]["version"] if status.get("canary") else None,
        "weight": status.get("canary_weight"),
    }


def stage_status(report: dict) -> dict[str, str]:
    return {stage["name"]: stage["status"] for stage in report["stages"]}


def test_healthy_version_is_promoted_through_every_stage(run_release, sandbox) -> None:
    with SlackRecorder() as slack:
        env_conn = {"AIRFLOW_CONN_SLACK_E2E": slack.connection_json()}
        run = run_release({"image": sandbox.image("1.1.0"), "reason": "e2e healthy"}, extra_env=env_conn)

        assert run.report is not None, run.output[-3000:]
        assert run.report["status"] == "promoted", run.output[-3000:]
        assert stage_status(run.report) == dict.fromkeys(STAGES, "passed")
        # HAProxy serves the new version to all traffic and no canary is left.
        assert traffic(sandbox) == {"stable": "1.1.0", "canary": None, "weight": 0}
        share = wait_for(lambda: measured_share(sandbox, "1.1.0"), 20, what="1.1.0 answers every request")
        assert share == 1.0
        # People were told: start, every stage verdict, outcome.
        texts = [m.get("text", "") for m in slack.wait_for(6, timeout=10)]
        assert any("1.1.0" in t and "promoted" in t for t in texts), texts
        assert sum("stage_" in t for t in texts) == 4, texts
    assert "promoted" in run.markdown


def test_version_with_errors_is_rolled_back_at_first_step(run_release, sandbox) -> None:
    run = run_release({"image": sandbox.image("1.2.0-errors")})

    assert run.report is not None, run.output[-3000:]
    assert run.report["status"] == "rolled_back", run.output[-3000:]
    assert stage_status(run.report) == {
        "stage_25": "failed",
        "stage_50": "skipped",
        "stage_75": "skipped",
        "stage_100": "skipped",
    }
    assert "error-rate" in run.report["stages"][0]["reason"]
    assert traffic(sandbox) == {"stable": "1.0.0", "canary": None, "weight": 0}
    assert wait_for(lambda: measured_share(sandbox, "1.0.0"), 20, what="stable answers every request") == 1.0
    assert run.returncode != 0 or "failed" in run.output.lower()


def test_version_that_crashes_is_rolled_back_before_any_traffic(run_release, sandbox) -> None:
    before = sandbox.counts()["by_version"].get("1.4.0-crash", 0)
    run = run_release({"image": sandbox.image("1.4.0-crash")})

    assert run.report is not None, run.output[-3000:]
    assert run.report["status"] == "rolled_back"
    assert set(stage_status(run.report).values()) == {"skipped"}
    assert "exit" in " ".join(run.report["incidents"]).lower()
    assert sandbox.counts()["by_version"].get("1.4.0-crash", 0) == before == 0
    assert traffic(sandbox) == {"stable": "1.0.0", "canary": None, "weight": 0}


def test_prometheus_stopped_during_bake_is_never_promoted(run_release, sandbox, e2e_env) -> None:
    result: dict = {}
    worker = threading.Thread(
        target=lambda: result.update(run=run_release({"image": sandbox.image("1.1.0")}))
    )
    worker.start()
    try:
        wait_for(lambda: (traffic(sandbox)["weight"] or 0) >= 25, 120, what="first stage under way")
        # the bake is under way once the gate's trigger has queried Prometheus
        queries = prometheus_queries(sandbox)
        wait_for(lambda: prometheus_queries(sandbox) >= queries + 4, 60, what="the gate measuring")
        sandbox.stop_prometheus()
        worker.join(timeout=300)
    finally:
        sandbox.start_prometheus()
    run = result["run"]
    assert run.report is not None, run.output[-3000:]
    assert run.report["status"] == "rolled_back"
    assert traffic(sandbox)["stable"] == "1.0.0"
    [failed] = [s for s in run.report["stages"] if s["status"] == "failed"]
    assert "never promoted on missing data" in failed["reason"]
    assert "stage_100" not in [s["name"] for s in run.report["stages"] if s["status"] == "passed"]
    # The advice follows the cause: no data means check Prometheus, not the new version.
    actions = run.report["next_actions"]
    assert actions[0].startswith("Check Prometheus (connection prometheus_default)"), actions
    assert not any(a.startswith("Investigate") for a in actions), actions


def test_request_refused_at_run_time_says_the_field_and_the_problem(run_release, sandbox) -> None:
    run = run_release({"image": sandbox.image("1.1.0"), "colour": "blue"})

    assert run.report is not None, run.output[-3000:]
    assert run.report["status"] == "refused"
    assert "colour: Extra inputs are not permitted" in run.report["summary"], run.report["summary"]
    assert "no reason recorded" not in run.markdown
    assert traffic(sandbox) == {"stable": "1.0.0", "canary": None, "weight": 0}


def test_retried_deploy_and_stage_tasks_leave_one_canary(run_release, e2e_env, sandbox) -> None:
    # Another release's canary is in flight: this one is refused before any change ...
    sandbox.driver().start(sandbox.image("1.3.0-slow"), 2)
    run = run_release({"image": sandbox.image("1.1.0")})
    assert run.report is not None and run.report["status"] == "refused", run.output[-3000:]
    assert "no other release in flight" in run.markdown
    assert sandbox.status()["canary"]["version"] == "1.3.0-slow"
    sandbox.reset()
    # A finished release's deploy and stage tasks run again, as retries would, with its conf.
    done = run_release({"image": sandbox.image("1.1.0")})
    assert done.report is not None and done.report["status"] == "promoted", done.output[-3000:]
    run_id = done.report["run_id"]
    params = json.dumps({"image": sandbox.image("1.1.0")})

    def task(task_id: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                ROOT / "scripts" / "airflow",
                "tasks",
                "test",
                "release__demo-api",
                task_id,
                run_id,
                "-t",
                params,
            ],
            env=e2e_env,
            capture_output=True,
            text=True,
            timeout=180,
        )

    for _ in range(2):
        for task_id in ("canary.deploy", "canary.stage_25.set_weight"):
            proc = task(task_id)
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    status = sandbox.status()
    assert status["canary"]["version"] == "1.1.0"
    assert len(status["canary"]["instances"]) == 2  # the spec's instances, not twice as many
    assert status["canary_weight"] == 25
    sandbox.reset()


def test_dead_slack_changes_nothing(run_release, sandbox) -> None:
    run = run_release(
        {"image": sandbox.image("1.1.0")}, extra_env={"AIRFLOW_CONN_SLACK_E2E": dead_connection_json()}
    )
    assert run.report is not None, run.output[-3000:]
    assert run.report["status"] == "promoted"
    assert "Slack notification not sent" in run.output


def prometheus_queries(sandbox) -> float:
    """Instant queries Prometheus has answered so far, from its own /metrics."""
    import httpx

    text = httpx.get(sandbox.state()["prometheus"]["url"] + "/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query"' in line
    )


def measured_share(sandbox, version: str) -> float | None:
    """Share of the load generator's answers from ``version`` over a fresh window, once it is 1.0."""
    first = sandbox.counts()
    wait_for(lambda: sandbox.counts()["total"] >= first["total"] + 50, 15, what="50 more answers")
    second = sandbox.counts()
    total = second["total"] - first["total"]
    from_version = second["by_version"].get(version, 0) - first["by_version"].get(version, 0)
    share = from_version / total if total else 0.0
    return share if share == 1.0 else None

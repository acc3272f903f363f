"""``runbook__service-down`` and ``runbook__high-error-rate`` end to end on the sandbox, with real faults.

- ServiceDown: the demo-api stable processes are killed (SIGKILL to the process groups the
  sandbox recorded); the runbook restarts them and sees them answer again.
- HighErrorRate: a version that goes bad after promotion (``1.5.0-late``: healthy 10 s,
  then half of its answers are 500s) is made the stable one through the sandbox's own
  controls, with a release report saying it was promoted a minute ago; the runbook rolls
  it back to the previous version, and the load generator's answers come from it again.
- One actor per service: a release of demo-api queued in Airflow (``scripts/airflow dags
  trigger``, no scheduler to run it) stops the runbook before any change.

Each runbook runs through ``scripts/airflow dags test`` with the conf Alertmanager's webhook
gives a run (as ``alerts.receiver`` builds it), instead of waiting the rules' ``for:``. The
runbooks are the shipped ones, copied with test settings: no approval asked (the approval
itself is tested in test_runbook_approval.py), Slack to a local recorder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.slack_server import SlackRecorder
from support.waiting import wait_for

from opsdag.reports.release_files import write_release_report

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]
DOWN_QUERY = (
    '(count(up{service="demo-api"} == 0) or vector(0)) + '
    '(count(haproxy_server_status{service="demo-api", state="DOWN"} == 1) or vector(0))'
)
HOLD_S = 40
ERROR_SHARE = (
    'sum(rate(opsdag_demo_http_requests_total{service="demo-api", code=~"5.."}[1m])) / '
    'sum(rate(opsdag_demo_http_requests_total{service="demo-api"}[1m]))'
)


@pytest.fixture(scope="module")
def slack() -> Iterator[SlackRecorder]:
    with SlackRecorder() as recorder:
        yield recorder


@pytest.fixture(scope="module")
def runbook_env(e2e_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, slack) -> dict[str, str]:
    """The e2e environment with an include/ whose service runbooks have the test's settings."""
    include = tmp_path_factory.mktemp("runbook-services-include")
    shutil.copytree(Path(e2e_env["OPSDAG_INCLUDE_DIR"]), include, dirs_exist_ok=True)
    for name in ("service-down", "high-error-rate"):
        path = include / "runbooks" / f"{name}.yaml"
        spec = yaml.safe_load(path.read_text())
        spec["guards"] = {**spec["guards"], "approval_for_destructive": False}
        spec["notifications"] = {"slack": {"channel": "#incidents", "connection_id": "slack_runbook"}}
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        if name == "service-down":  # asks before restarting; no escalation (it would wait for a person)
            asking = {**spec, "name": "service-down-asking", "steps": spec["steps"][:-1]}
            asking["guards"] = {**spec["guards"], "approval_for_destructive": True, "dry_run": False}
            (path.parent / "service-down-asking.yaml").write_text(yaml.safe_dump(asking, sort_keys=False))
    # a runbook that acts on demo-api after a (deferred) wait: while it waits, its run is running
    hold = {
        "name": "demo-api-hold",
        "alerts": ["DemoApiHold"],
        "steps": [
            {"action": "wait", "name": "hold", "duration": f"{HOLD_S}s"},
            {"action": "restart_instances", "name": "restart-instances", "service": "demo-api"},
        ],
        "guards": {"approval_for_destructive": False, "dry_run": False},
    }
    (include / "runbooks" / "demo-api-hold.yaml").write_text(yaml.safe_dump(hold, sort_keys=False))
    scale_out = {
        "name": "demo-api-scale-out",
        "alerts": ["DemoApiBusy"],
        "steps": [{"action": "scale", "name": "scale-out", "service": "demo-api", "replicas": 3}],
        "guards": {"approval_for_destructive": False, "dry_run": False},
    }
    (include / "runbooks" / "demo-api-scale-out.yaml").write_text(yaml.safe_dump(scale_out, sort_keys=False))
    return {
        **e2e_env,
        "OPSDAG_INCLUDE_DIR": str(include),
        "AIRFLOW_CONN_SLACK_RUNBOOK": slack.connection_json(),
    }


def alert_conf(name: str, fingerprint: str) -> dict[str, Any]:
    """What the alert receiver gives a run (``Alert.to_conf``) for an alert on demo-api."""
    return {
        "alert": {
            "name": name,
            "status": "firing",
            "labels": {"alertname": name, "service": "demo-api", "severity": "critical"},
            "annotations": {"summary": f"{name} on demo-api"},
            "startsAt": datetime.now(UTC).isoformat(),
            "fingerprint": fingerprint,
            "generatorURL": "",
        },
        "dry_run": False,
    }


def run_runbook(
    env: dict[str, str], dag_id: str, conf: dict[str, Any]
) -> tuple[int, str, dict[str, Any], str]:
    reports = Path(env["OPSDAG_REPORTS_DIR"]) / dag_id
    before = set(reports.glob("*.json")) if reports.exists() else set()
    proc = subprocess.run(
        [ROOT / "scripts" / "airflow", "dags", "test", dag_id, "-c", json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    new = sorted(set(reports.glob("*.json")) - before) if reports.exists() else []
    assert new, f"no postmortem written:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return (
        proc.returncode,
        proc.stdout + proc.stderr,
        json.loads(new[-1].read_text()),
        new[-1].with_suffix(".md").read_text(),
    )


def actions(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["step"]: a for a in report["actions"]}


def value(prometheus: Any, query: str) -> float:
    result = prometheus.query(query)
    return float(result[0]["value"][1]) if result else 0.0


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def kill_stable(sandbox) -> list[dict[str, Any]]:
    """SIGKILL every stable demo-api process group the sandbox recorded; returns the victims."""
    victims = sandbox.state()["fleet"]["stable"]["instances"]
    for inst in victims:
        os.killpg(inst["pid"], signal.SIGKILL)
    wait_for(
        lambda: not any(answers(i["port"]) for i in victims), timeout=10, what="the killed instances silent"
    )
    return victims


@pytest.fixture
def release_in_flight(runbook_env: dict[str, str]) -> Iterator[str]:
    """A run of release__demo-api queued in Airflow's metadata (no scheduler runs it), deleted after."""
    airflow = [ROOT / "scripts" / "airflow"]
    subprocess.run(
        [*airflow, "dags", "reserialize"], env=runbook_env, check=True, capture_output=True, timeout=120
    )
    run_id = f"manual__in_flight_{datetime.now(UTC):%H%M%S}"
    conf = json.dumps({"image": "registry.opsdag.local/demo-api:1.1.0"})
    subprocess.run(
        [*airflow, "dags", "trigger", "release__demo-api", "--run-id", run_id, "-c", conf],
        env=runbook_env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    yield run_id
    subprocess.run(
        [*airflow, "dags", "delete", "release__demo-api", "--yes"],
        env=runbook_env,
        capture_output=True,
        timeout=120,
    )


def test_a_release_in_flight_stops_the_runbook_before_any_change(
    runbook_env, sandbox, release_in_flight
) -> None:
    sandbox.reset()
    victims = kill_stable(sandbox)
    try:
        wait_for(
            lambda: value(sandbox.prometheus, DOWN_QUERY) > 0, timeout=20, what="Prometheus sees them down"
        )
        conf = alert_conf("ServiceDown", "0ac70a0ac70a")
        conf["dry_run"] = True  # the escalation then posts without waiting for a person's choice
        _code, _output, report, markdown = run_runbook(runbook_env, "runbook__service-down", conf)
        steps = actions(report)
        restart = steps["restart-instances"]
        assert restart["result"] == "skipped", restart
        assert restart["detail"] == (
            "refused, nothing changed: release__demo-api (1 run in flight) is acting on demo-api; "
            "one actor per service"
        )
        assert restart["data"]["actors"] == {"release__demo-api": 1}
        assert steps["verify-instances-up"]["result"] == "skipped"
        # nothing was restarted: the same dead processes are the stable fleet
        assert [i["name"] for i in sandbox.state()["fleet"]["stable"]["instances"]] == [
            v["name"] for v in victims
        ]
        escalate = steps["escalate"]
        assert escalate["result"] == "done" and "acting on demo-api" in escalate["detail"], escalate
        assert "refused, nothing changed" in markdown

        # for real, with the approval guard on: nobody is asked, the step refuses all the same
        conf = alert_conf("ServiceDown", "0ac70b0ac70b")
        _code, output, report, _ = run_runbook(runbook_env, "runbook__service-down-asking", conf)
        assert "no approval asked for restart-instances: release__demo-api" in output, output[-3000:]
        restart = actions(report)["restart-instances"]
        assert (restart["result"], restart["detail"].split(":")[0]) == ("skipped", "refused, nothing changed")
        assert [i["name"] for i in sandbox.state()["fleet"]["stable"]["instances"]] == [
            v["name"] for v in victims
        ]
    finally:
        sandbox.driver().restart("stable")


def run_states(env: dict[str, str], dag_id: str) -> list[str]:
    proc = subprocess.run(
        [ROOT / "scripts" / "airflow", "dags", "list-runs", dag_id, "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # the CLI's warnings share stdout with the JSON, which is its last line
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    return [run["state"] for run in json.loads(lines[-1])] if lines else []


def test_a_release_is_refused_while_a_runbook_acts_on_its_service(
    runbook_env, sandbox, run_release, tmp_path
) -> None:
    stable = sandbox.driver().status().stable.image
    log = (tmp_path / "runbook.log").open("w+")
    held = subprocess.Popen(
        [
            ROOT / "scripts" / "airflow",
            "dags",
            "test",
            "runbook__demo-api-hold",
            "-c",
            json.dumps({"dry_run": False}),
        ],
        env=runbook_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            lambda: "running" in run_states(runbook_env, "runbook__demo-api-hold"),
            timeout=HOLD_S - 10,
            what="the runbook's run running",
        )
        release = run_release(
            {"image": sandbox.image("1.1.0"), "reason": "while a runbook acts"},
            extra_env={"OPSDAG_INCLUDE_DIR": runbook_env["OPSDAG_INCLUDE_DIR"]},
        )
        assert "running" in run_states(runbook_env, "runbook__demo-api-hold"), "the runbook ended too early"
    finally:
        held.wait(timeout=150)
        log.seek(0)
        output = log.read()
    assert release.returncode != 0
    assert release.report["status"] == "refused", release.report
    assert release.report["failure"]["task_id"] == "validate_request"
    assert release.report["failure"]["error"].endswith(
        "release request refused:\nservice: runbook__demo-api-hold (1 run in flight) is acting on demo-api; "
        "one actor per service; trigger the release again once it has ended"
    ), release.report["failure"]
    assert sandbox.driver().status().stable.image == stable  # the release changed nothing
    assert held.returncode == 0, output[-3000:]


def test_killed_instances_are_restarted_and_answer_again(runbook_env, sandbox, slack) -> None:
    sandbox.reset()
    victims = kill_stable(sandbox)
    wait_for(lambda: value(sandbox.prometheus, DOWN_QUERY) > 0, timeout=20, what="Prometheus sees them down")
    slack.reset()

    code, output, report, markdown = run_runbook(
        runbook_env, "runbook__service-down", alert_conf("ServiceDown", "5e7d0075e7d007")
    )

    assert code == 0, output[-4000:]
    stable = sandbox.state()["fleet"]["stable"]["instances"]
    assert len(stable) == len(victims)
    assert not {i["name"] for i in stable} & {v["name"] for v in victims}
    assert all(answers(i["port"]) for i in stable)
    steps = actions(report)
    diagnose = steps["diagnose-service"]
    assert (diagnose["kind"], diagnose["result"]) == ("diagnostics", "done")
    assert diagnose["detail"].startswith(f"stable {sandbox.image('1.0.0')}: ")
    assert diagnose["data"]["status"]["stable"]["instances"] == len(victims)
    # the killed instances' last log lines, and the snapshot counting them down
    assert set(diagnose["data"]["logs"]) == {v["name"] for v in victims}
    assert diagnose["detail"].endswith(f"; the last 5 log lines of {len(victims)} instance(s) recorded")
    snapshot = steps["snapshot"]["data"]["figures"]
    assert snapshot["instances-down"] + snapshot["haproxy-servers-down"] >= 1, snapshot
    assert steps["confirm-down"]["result"] == "done"
    restart = steps["restart-instances"]
    assert (restart["kind"], restart["result"]) == ("mitigate", "done"), restart
    assert restart["detail"].startswith(
        f"restarted {len(victims)} of {len(victims)} instance(s), all ready in "
    )
    assert all(f"pid {v['pid']}" in restart["detail"] for v in victims)
    assert restart["data"]["after"]["ready_instances"] == len(victims)
    assert steps["verify-instances-up"]["result"] == "done"
    assert report["verify"]["recovered"] is True
    assert report["figures"]["mitigated_by"] == "restart-instances"
    assert steps["escalate"]["result"] == "skipped"
    assert steps["escalate"]["detail"] == "the runbook restored the service: nobody called"
    assert "Recovered, verified at" in markdown


def test_a_release_gone_bad_after_promotion_is_rolled_back_to_the_previous_version(
    runbook_env, sandbox, slack
) -> None:
    sandbox.reset()
    previous, bad = sandbox.image("1.0.0"), sandbox.image("1.5.0-late")
    sandbox.reset("1.5.0-late")  # through the sandbox's controls: start, ready, promote
    promoted = datetime.now(UTC)
    write_release_report(
        {
            "service": "demo-api",
            "status": "promoted",
            "image": bad,
            "previous_image": previous,
            "strategy": "canary",
            "run_id": "manual__late_fault",
            "started_at": (promoted - timedelta(seconds=40)).isoformat(),
            "finished_at": promoted.isoformat(),
        },
        root=runbook_env["OPSDAG_REPORTS_DIR"],
    )
    wait_for(
        lambda: value(sandbox.prometheus, ERROR_SHARE) > 0.01, timeout=40, what="the 5xx share above 1 %"
    )
    slack.reset()

    code, output, report, markdown = run_runbook(
        runbook_env, "runbook__high-error-rate", alert_conf("HighErrorRate", "e7707e7707")
    )

    assert code == 0, output[-4000:]
    assert sandbox.driver().status().stable.image == previous
    # the load generator's answers now come from the previous version only
    first = sandbox.counts()["by_version"]
    wait_for(
        lambda: sandbox.counts()["by_version"].get("1.0.0", 0) > first.get("1.0.0", 0) + 20,
        timeout=10,
        what="answers of 1.0.0",
    )
    last = sandbox.counts()["by_version"]
    assert last.get("1.5.0-late", 0) == first.get("1.5.0-late", 0)
    steps = actions(report)
    assert steps["diagnose-service"]["detail"].startswith(
        f"stable {bad}: 2 of 2 ready; no canary; traffic 100 % stable / 0 % canary; "
        "last releases: manual__late_fault promoted "
    )
    assert "(1.0.0 -> 1.5.0-late)" in steps["diagnose-service"]["detail"]
    snapshot = steps["snapshot"]["data"]["figures"]
    assert snapshot["error-share-1m"] > 0.01 and snapshot["requests-per-s"] > 0, snapshot
    rollback = steps["roll-back-last-release"]
    assert (rollback["kind"], rollback["result"]) == ("mitigate", "done"), rollback
    assert rollback["detail"].startswith(f"rolled back {bad} -> {previous} on 2 instance(s) in ")
    assert "(manual__late_fault, less than 2 h): back to" in rollback["detail"]
    assert rollback["data"]["last_release"]["run_id"] == "manual__late_fault"
    assert steps["verify-error-rate"]["result"] == "done"
    assert report["verify"]["recovered"] is True
    assert steps["escalate"]["result"] == "skipped"
    assert any("high-error-rate" in m["text"] for m in slack.messages)
    assert "rolled back" in markdown


def test_scale_out_runs_one_more_stable_instance_that_answers(runbook_env, sandbox) -> None:
    sandbox.reset()
    image = sandbox.image("1.0.0")
    try:
        code, output, report, _ = run_runbook(
            runbook_env, "runbook__demo-api-scale-out", alert_conf("DemoApiBusy", "5ca1e0005ca1e000")
        )
        assert code == 0, output[-3000:]
        stable = sandbox.state()["fleet"]["stable"]["instances"]
        assert len(stable) == 3 and all(answers(i["port"]) for i in stable)
        status = sandbox.driver().status().stable
        assert (status.instances, status.ready_instances) == (3, 3)
        scale = actions(report)["scale-out"]
        assert (scale["kind"], scale["result"]) == ("mitigate", "done"), scale
        assert scale["detail"].startswith(f"scaled {image} from 2 to 3 instance(s), all ready in ")
    finally:
        sandbox.reset()

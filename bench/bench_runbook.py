"""Runbook benchmark on the real path: an Alertmanager webhook POST to the service restored.

A sandbox and ``airflow standalone`` (opsdag.dev.standalone, LocalExecutor) with the
plugin loaded, on a copy of include/ with only demo-api, its two service runbooks and
their guards opened for the bench (not a dry run, no approval asked, 20 runs an hour);
Slack goes to a local recorder. The sandbox's own Alertmanager is pointed nowhere, so
that only the bench's POSTs start runs: each is the body Alertmanager sends (webhook
version 4, the bearer token of the sandbox's credentials file) to ``POST /opsdag/alerts``,
with a fresh fingerprint. ``--runs`` of each (default 5):

- HighErrorRate: the fleet reset to 1.0.0, then 1.5.0-late made stable through the
  sandbox's controls with a release report promoted just now; once Prometheus shows the
  rule's 5xx share above 1 % (10 s after start the version answers half with a 500), the
  POST. Traffic restored: the first load-generator counts-file write (every 0.5 s, so
  +-0.5 s) after which 1.5.0-late answers no more, checked for 3 s after the rollback.
- ServiceDown: the stable processes killed (SIGKILL to their recorded process groups),
  Prometheus sees them down, the POST. Answering again: every stable instance answers
  /healthz and HAProxy sees it UP (polled every 0.1 s).

Also per run: the POST's own answer time, and the runbook's run from its start to the
mitigation step's end (from the postmortem). Not included: the alert's ``for:`` (1 min,
30 s) and Alertmanager's ``group_wait``, which come before the POST.

    .venv/bin/python bench/bench_runbook.py [--runs 5] [--out bench/results/runbook.json]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402
import yaml  # noqa: E402
from support.sandbox import running_sandbox  # noqa: E402
from support.slack_server import SlackRecorder  # noqa: E402
from support.standalone_run import standalone_airflow  # noqa: E402
from support.waiting import wait_for  # noqa: E402

from opsdag.airflow_api import AirflowClient  # noqa: E402
from opsdag.dev.sandbox.alertmanager_server import point_alerts_at  # noqa: E402
from opsdag.dev.sandbox.connections import alerts_token  # noqa: E402
from opsdag.reports.release_files import write_release_report  # noqa: E402

RESULTS = ROOT / "bench" / "results"
GOAL_ROLLBACK_S = 10.0
DOWN_QUERY = (
    '(count(up{service="demo-api"} == 0) or vector(0)) + '
    '(count(haproxy_server_status{service="demo-api", state="DOWN"} == 1) or vector(0))'
)
ERROR_SHARE = (
    'sum(rate(opsdag_demo_http_requests_total{service="demo-api", code=~"5.."}[1m])) / '
    'sum(rate(opsdag_demo_http_requests_total{service="demo-api"}[1m]))'
)
MITIGATION = {"high-error-rate": "roll-back-last-release", "service-down": "restart-instances"}


def log(message: str) -> None:
    print(f"[bench_runbook {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def bench_include(workdir: Path) -> Path:
    include = workdir / "include"
    shutil.copytree(ROOT / "include", include, dirs_exist_ok=True)
    for kind in ("services", "runbooks", "databases"):
        for path in (include / kind).glob("*.yaml"):
            if path.stem not in ("demo-api", "high-error-rate", "service-down"):
                path.unlink()
    for name in ("high-error-rate", "service-down"):
        path = include / "runbooks" / f"{name}.yaml"
        spec = yaml.safe_load(path.read_text())
        spec["guards"] = {**spec["guards"], "dry_run": False, "approval_for_destructive": False}
        spec["guards"]["max_runs_per_hour"] = 20
        spec["notifications"] = {"slack": {"channel": "#incidents", "connection_id": "slack_runbook"}}
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return include


def post_alert(url: str, token: str, name: str, fingerprint: str) -> tuple[float, float, str]:
    """POST one firing alert as Alertmanager does; (posted at, answer seconds, run id)."""
    alert = {
        "status": "firing",
        "labels": {"alertname": name, "service": "demo-api", "severity": "critical"},
        "annotations": {"summary": f"{name} on demo-api (bench)"},
        "startsAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    }
    body = {"version": "4", "status": "firing", "groupKey": "{}:{}", "receiver": "opsdag", "alerts": [alert]}
    posted = time.time()
    answer = httpx.post(
        f"{url.rstrip('/')}/opsdag/alerts",
        content=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=60,
    )
    took = time.time() - posted
    answer.raise_for_status()
    [started] = answer.json()["started"]
    return posted, took, started["run_id"]


def value(sandbox: Any, query: str) -> float:
    result = sandbox.prometheus.query(query)
    return float(result[0]["value"][1]) if result else 0.0


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=0.5) as resp:
            return resp.status == 200
    except OSError:
        return False


def run_end(client: AirflowClient, dag_id: str, run_id: str) -> str:
    wait_for(
        lambda: client.dag_run(dag_id, run_id)["state"] in ("success", "failed"),
        240,
        interval=1,
        what=f"{dag_id} {run_id} ended",
    )
    return client.dag_run(dag_id, run_id)["state"]


def postmortem_figures(reports: Path, dag_id: str, run_id: str, runbook: str) -> dict[str, Any]:
    data = json.loads((reports / dag_id / f"{run_id}.json").read_text())
    step = next(a for a in data["actions"] if a["step"] == MITIGATION[runbook])
    return {
        "mitigation": step["result"],
        "mitigation_detail": step["detail"],
        "mitigation_s": round(
            (
                datetime.fromisoformat(step["ended_at"]) - datetime.fromisoformat(step["started_at"])
            ).total_seconds(),
            2,
        )
        if step.get("started_at")
        else None,
        "recovered": (data.get("verify") or {}).get("recovered"),
        "summary": data.get("summary"),
    }


def high_error_rate_run(sandbox, url, token, reports, client, i) -> dict[str, Any]:
    previous, bad = sandbox.image("1.0.0"), sandbox.image("1.5.0-late")
    sandbox.reset()
    sandbox.reset("1.5.0-late")
    promoted = datetime.now(UTC)
    write_release_report(
        {
            "service": "demo-api",
            "status": "promoted",
            "image": bad,
            "previous_image": previous,
            "strategy": "canary",
            "run_id": f"manual__bench_late_{i}_{promoted:%H%M%S}",
            "started_at": (promoted - timedelta(seconds=40)).isoformat(),
            "finished_at": promoted.isoformat(),
        },
        root=reports,
    )
    wait_for(lambda: value(sandbox, ERROR_SHARE) > 0.01, timeout=60, interval=0.5, what="5xx share above 1 %")
    posted, answer_s, run_id = post_alert(url, token, "HighErrorRate", secrets.token_hex(8))
    samples: list[tuple[float, int]] = []  # (counts file updated_at, cumulative answers of 1.5.0-late)
    deadline = time.time() + 120
    rolled_back_at = None
    while time.time() < deadline:
        counts = sandbox.counts() or {}
        late = counts.get("by_version", {}).get("1.5.0-late", 0)
        if not samples or samples[-1][0] != counts.get("updated_at"):
            samples.append((counts.get("updated_at", 0.0), late))
        if rolled_back_at is None and sandbox.driver().status().stable.image == previous:
            rolled_back_at = time.time()
        if rolled_back_at and time.time() > rolled_back_at + 3:
            break
        time.sleep(0.1)
    final = samples[-1][1]
    restored = next(t for t, n in samples if n == final and t >= posted - 1)
    state = run_end(client, "runbook__high-error-rate", run_id)
    return {
        "run_id": run_id,
        "state": state,
        "post_answer_s": round(answer_s, 3),
        "traffic_restored_s": round(restored - posted, 2),
        "stable_is_previous_s": round(rolled_back_at - posted, 2) if rolled_back_at else None,
        **postmortem_figures(reports, "runbook__high-error-rate", run_id, "high-error-rate"),
    }


def service_down_run(sandbox, url, token, reports, client, i) -> dict[str, Any]:
    sandbox.reset()
    victims = sandbox.state()["fleet"]["stable"]["instances"]
    for inst in victims:
        os.killpg(inst["pid"], signal.SIGKILL)
    wait_for(
        lambda: value(sandbox, DOWN_QUERY) > 0, timeout=30, interval=0.5, what="Prometheus sees them down"
    )
    posted, answer_s, run_id = post_alert(url, token, "ServiceDown", secrets.token_hex(8))
    names = {v["name"] for v in victims}

    def all_answer() -> bool:
        stable = sandbox.state()["fleet"]["stable"]["instances"]
        if {s["name"] for s in stable} & names or not all(answers(s["port"]) for s in stable):
            return False
        status = sandbox.driver().status().stable
        return status is not None and status.healthy

    wait_for(all_answer, timeout=120, interval=0.1, what="the stable instances answering again")
    answering = time.time()
    state = run_end(client, "runbook__service-down", run_id)
    return {
        "run_id": run_id,
        "state": state,
        "post_answer_s": round(answer_s, 3),
        "answering_again_s": round(answering - posted, 2),
        **postmortem_figures(reports, "runbook__service-down", run_id, "service-down"),
    }


def summary(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    values = [r[key] for r in runs if r.get(key) is not None]
    return {
        "median_s": round(statistics.median(values), 2) if values else None,
        "max_s": max(values) if values else None,
        "runs": len(values),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "5")))
    parser.add_argument("--out", default=str(RESULTS / "runbook.json"))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="opsdag-bench-runbook-"))
    os.chmod(workdir, 0o711)  # the sandbox's PostgreSQL runs as another user
    include = bench_include(workdir)
    state = workdir / "state"
    reports = state / "reports"
    started = datetime.now(UTC)
    with SlackRecorder() as slack, running_sandbox(workdir / "sandbox") as sandbox:
        env = {
            **os.environ,
            "OPSDAG_STATE_DIR": str(state),
            "OPSDAG_INCLUDE_DIR": str(include),
            "OPSDAG_SANDBOX_DIR": str(sandbox.root),
            "OPSDAG_REPORTS_DIR": str(reports),
        }
        os.environ["AIRFLOW_CONN_SLACK_RUNBOOK"] = slack.connection_json()
        log("starting airflow standalone ...")
        with standalone_airflow(env) as credentials:
            point_alerts_at(sandbox.layout, None)  # only the bench's POSTs start runs
            token = alerts_token(sandbox.layout)
            with AirflowClient(credentials) as client:
                for dag_id in ("runbook__high-error-rate", "runbook__service-down"):
                    client.unpause(dag_id)
                high, down = [], []
                for i in range(args.runs):
                    high.append(high_error_rate_run(sandbox, credentials.url, token, reports, client, i))
                    log(f"HighErrorRate {i + 1}: {json.dumps(high[-1])}")
                    down.append(service_down_run(sandbox, credentials.url, token, reports, client, i))
                    log(f"ServiceDown {i + 1}: {json.dumps(down[-1])}")
    result = {
        "benchmark": "runbook",
        "date": started.isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "path": "POST /opsdag/alerts (Alertmanager's webhook body, bearer token) on airflow standalone "
        "(LocalExecutor) with the opsdag plugin, against the sandbox",
        "not_included": "the alert rules' for: (HighErrorRate 1 min, ServiceDown 30 s) and Alertmanager's "
        "group_wait, before the POST",
        "goal": {"high_error_rate_traffic_restored_s": GOAL_ROLLBACK_S},
        "summary": {
            "high_error_rate_traffic_restored": summary(high, "traffic_restored_s"),
            "high_error_rate_stable_is_previous": summary(high, "stable_is_previous_s"),
            "high_error_rate_rollback_step": summary(high, "mitigation_s"),
            "service_down_answering_again": summary(down, "answering_again_s"),
            "service_down_restart_step": summary(down, "mitigation_s"),
            "post_answer": summary(high + down, "post_answer_s"),
        },
        "high_error_rate": high,
        "service_down": down,
    }
    met = (result["summary"]["high_error_rate_traffic_restored"]["max_s"] or 1e9) <= GOAL_ROLLBACK_S
    result["goal"]["met"] = met
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    log(f"goal <= {GOAL_ROLLBACK_S:g} s POST -> traffic restored (every run): {'met' if met else 'NOT met'}")
    log(f"written to {args.out}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

# ruff: noqa: F811  (pytest fixtures imported from the db-connections module are redefined as arguments)
"""The whole alert chain on the sandbox, with real faults and nothing posted by the test.

A fault is injected for real; the sandbox's Prometheus evaluates the shipped rule (a copy
in ``<sandbox>/prometheus/rules/`` with ``for: 5s`` instead of 30 s or 1 m, the only
change); its Alertmanager (``group_wait`` 2 s) posts to ``/opsdag/alerts`` of a real
``airflow standalone`` with opsdag's plugin; the receiver starts the runbook's run
(``alert__<fingerprint>__<startsAt>``), the scheduler runs it, the fault is mitigated and
the postmortem (Markdown + JSON) names the alert. The runbooks are the shipped ones, copied
with test settings: not a dry run, no approval asked, Slack to a local recorder (and, for
db-connections, only the test's role's connections idle for more than 2 s).

- ServiceDown: the demo-api stable processes are killed (SIGKILL to their recorded groups).
- DatabaseConnectionsExhausted: idle connections held above 80 % of ``max_connections``.
- HighErrorRate: ``1.5.0-late`` (bad 10 s after it starts) made stable with a report saying
  it was promoted just now.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from support.standalone_run import standalone_airflow
from support.waiting import wait_for
from test_runbook_db_connections import (  # noqa: F401
    OLDER_THAN_S,
    ROLE,
    demo_db,
    hold_idle,
    idle_sessions,
    share,
    slack,
)
from test_runbook_services import DOWN_QUERY, ERROR_SHARE, answers, kill_stable, value

from opsdag.airflow_api import AirflowClient
from opsdag.dev.sandbox import alertmanager_server as am
from opsdag.dev.sandbox import prometheus_server as prom
from opsdag.reports.release_files import write_release_report

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(360)]
ROOT = Path(__file__).resolve().parents[2]
FOR = "5s"
RUNBOOKS = {
    "ServiceDown": "service-down",
    "DatabaseConnectionsExhausted": "db-connections",
    "HighErrorRate": "high-error-rate",
}


def shipped_rule(name: str) -> dict[str, Any]:
    for path in sorted((ROOT / "include" / "alerts").glob("*.yaml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if rule["alert"] == name:
                    return rule
    raise LookupError(f"no shipped rule {name}")


@pytest.fixture(scope="module")
def chain(
    e2e_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, sandbox, slack
) -> Iterator[dict]:
    """Standalone Airflow on an include/ copy whose three runbooks act at once; its reports dir."""
    include = tmp_path_factory.mktemp("chain-include")
    shutil.copytree(ROOT / "include", include, dirs_exist_ok=True)
    for path in (include / "alerts").glob("*.yaml"):  # the copy states the rules Prometheus gets
        rules = yaml.safe_load(path.read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                rule["for"] = FOR
        path.write_text(yaml.safe_dump(rules, sort_keys=False))
    for name in RUNBOOKS.values():
        path = include / "runbooks" / f"{name}.yaml"
        spec = yaml.safe_load(path.read_text())
        spec["guards"] = {**spec["guards"], "dry_run": False, "approval_for_destructive": False}
        spec["notifications"] = {"slack": {"channel": "#incidents", "connection_id": "slack_runbook"}}
        if name == "db-connections":
            spec["steps"][1].update(older_than=f"{OLDER_THAN_S}s", user=ROLE)
            spec["steps"][2].update(timeout="60s", interval="1s")
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
    state = tmp_path_factory.mktemp("chain-state")
    env = {
        **e2e_env,
        "OPSDAG_INCLUDE_DIR": str(include),
        "OPSDAG_STATE_DIR": str(state),
        "OPSDAG_REPORTS_DIR": str(state / "reports"),
    }
    os.environ["AIRFLOW_CONN_SLACK_RUNBOOK"] = slack.connection_json()  # standalone's workers inherit it
    try:
        with standalone_airflow(env) as credentials:  # also points the sandbox's Alertmanager at it
            webhook = sandbox.state()["alertmanager"]["webhook_url"]
            assert webhook == f"{credentials.url.rstrip('/')}/opsdag/alerts", webhook
            with AirflowClient(credentials) as client:
                for name in RUNBOOKS.values():
                    client.unpause(f"runbook__{name}")
            yield {"credentials": credentials, "reports": state / "reports", "include": include}
    finally:
        os.environ.pop("AIRFLOW_CONN_SLACK_RUNBOOK", None)


@contextmanager
def short_rule(sandbox, chain: dict, alertname: str) -> Iterator[None]:
    """Prometheus evaluates ``alertname`` as the include copy states it (``for: 5s``) while the test runs."""
    rule = next(
        r
        for p in sorted((chain["include"] / "alerts").glob("*.yaml"))
        for g in yaml.safe_load(p.read_text())["groups"]
        for r in g["rules"]
        if r["alert"] == alertname
    )
    assert rule["expr"] == shipped_rule(alertname)["expr"]  # the shipped expression, only for: shorter
    path = sandbox.layout.prometheus_dir / "rules" / "opsdag-chain.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"groups": [{"name": "opsdag-chain", "rules": [rule]}]}))
    url = sandbox.state()["prometheus"]["url"]
    prom.reload(url)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        prom.reload(url)


def fired(sandbox, alertname: str, service: str, since: datetime) -> dict[str, Any]:
    """The alert as Alertmanager holds it, once Prometheus has sent it; it started firing after ``since``."""
    client = am.AlertmanagerClient(sandbox.state()["alertmanager"]["url"])
    alert = wait_for(
        lambda: next(
            (
                a
                for a in client.alerts()
                if a["labels"].get("alertname") == alertname and a["labels"].get("service") == service
            ),
            None,
        ),
        timeout=90,
        interval=0.5,
        what=f"{alertname} for {service} in Alertmanager",
    )
    starts_at = datetime.fromisoformat(alert["startsAt"].replace("Z", "+00:00"))
    assert starts_at > since, f"{alertname} has fired since {alert['startsAt']}, before the fault"
    return alert


def runbook_run(chain: dict, dag_id: str, fingerprint: str) -> tuple[dict[str, Any], float]:
    """The run Alertmanager's POST started for the alert, once it has ended; when it was first seen."""
    with AirflowClient(chain["credentials"]) as client:

        def started() -> dict[str, Any] | None:
            runs = client.request("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]
            return next((r for r in runs if r["dag_run_id"].startswith(f"alert__{fingerprint}__")), None)

        run = wait_for(started, timeout=60, interval=0.5, what=f"a run of {dag_id} for alert {fingerprint}")
        seen = time.monotonic()
        ended = wait_for(
            lambda: (r := client.dag_run(dag_id, run["dag_run_id"]))["state"] in ("success", "failed") and r,
            timeout=180,
            interval=1,
            what=f"the end of {run['dag_run_id']}",
        )
        return ended, seen


def postmortem(chain: dict, dag_id: str, run_id: str) -> tuple[dict[str, Any], str]:
    path = chain["reports"] / dag_id / f"{run_id}.json"
    wait_for(path.exists, timeout=10, what=f"{path}")
    return json.loads(path.read_text()), path.with_suffix(".md").read_text()


def check_postmortem(chain: dict, dag_id: str, run: dict, alert: dict) -> dict[str, Any]:
    report, markdown = postmortem(chain, dag_id, run["dag_run_id"])
    assert report["alert"]["name"] == alert["labels"]["alertname"], report["alert"]
    assert report["alert"]["fingerprint"] == alert["fingerprint"]
    assert report["dry_run"] is False
    assert report["verify"]["recovered"] is True, report["verify"]
    assert alert["labels"]["alertname"] in markdown
    return report


def timings(t0: float, **marks: float) -> str:
    return ", ".join(f"{k} +{v - t0:.1f} s" for k, v in marks.items())


def test_killed_instances_fire_service_down_and_its_runbook_restarts_them(chain, sandbox) -> None:
    sandbox.reset()
    wait_for(lambda: value(sandbox.prometheus, DOWN_QUERY) == 0, timeout=30, what="no demo-api instance down")
    with short_rule(sandbox, chain, "ServiceDown"):
        t0, since = time.monotonic(), datetime.now(UTC)
        victims = kill_stable(sandbox)
        alert = fired(sandbox, "ServiceDown", "demo-api", since)
        t_alert = time.monotonic()
        run, t_run = runbook_run(chain, "runbook__service-down", alert["fingerprint"])
        t_end = time.monotonic()

    assert run["state"] == "success", run
    stable = sandbox.state()["fleet"]["stable"]["instances"]
    assert len(stable) == len(victims) and not {i["name"] for i in stable} & {v["name"] for v in victims}
    assert all(answers(i["port"]) for i in stable)
    report = check_postmortem(chain, "runbook__service-down", run, alert)
    assert report["figures"]["mitigated_by"] == "restart-instances"
    print(f"ServiceDown chain: {timings(t0, in_alertmanager=t_alert, run_started=t_run, run_ended=t_end)}")


def test_idle_connections_fire_database_connections_exhausted_and_are_terminated(
    chain, sandbox, demo_db
) -> None:
    su = demo_db["superuser"]
    max_connections = int(su.execute("SHOW max_connections").fetchone()[0])
    in_use = su.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
    ).fetchone()[0]
    with short_rule(sandbox, chain, "DatabaseConnectionsExhausted"):
        t0, since = time.monotonic(), datetime.now(UTC)
        held = hold_idle(demo_db, int(max_connections * 0.85) - in_use)
        alert = fired(sandbox, "DatabaseConnectionsExhausted", "demo-db", since)
        t_alert = time.monotonic()
        run, t_run = runbook_run(chain, "runbook__db-connections", alert["fingerprint"])
        t_end = time.monotonic()

    assert run["state"] == "success", run
    assert idle_sessions(demo_db) == 0
    assert share(sandbox.prometheus) < 0.8
    for conn in held:
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    report = check_postmortem(chain, "runbook__db-connections", run, alert)
    assert report["figures"]["mitigated_by"] == "terminate-idle"
    marks = timings(t0, in_alertmanager=t_alert, run_started=t_run, run_ended=t_end)
    print(f"DatabaseConnectionsExhausted chain: {marks}")


def test_a_release_gone_bad_fires_high_error_rate_and_is_rolled_back(chain, sandbox) -> None:
    sandbox.reset()
    previous, bad = sandbox.image("1.0.0"), sandbox.image("1.5.0-late")
    wait_for(
        lambda: value(sandbox.prometheus, ERROR_SHARE) < 0.01, timeout=60, what="the 5xx share under 1 %"
    )
    with short_rule(sandbox, chain, "HighErrorRate"):
        t0, since = time.monotonic(), datetime.now(UTC)
        sandbox.reset("1.5.0-late")  # through the sandbox's controls: start, ready, promote
        promoted = datetime.now(UTC)
        write_release_report(
            {
                "service": "demo-api",
                "status": "promoted",
                "image": bad,
                "previous_image": previous,
                "strategy": "canary",
                "run_id": "manual__chain_late_fault",
                "started_at": (promoted - timedelta(seconds=40)).isoformat(),
                "finished_at": promoted.isoformat(),
            },
            root=chain["reports"],
        )
        alert = fired(sandbox, "HighErrorRate", "demo-api", since)
        t_alert = time.monotonic()
        run, t_run = runbook_run(chain, "runbook__high-error-rate", alert["fingerprint"])
        t_end = time.monotonic()

    assert run["state"] == "success", run
    assert sandbox.driver().status().stable.image == previous
    first = sandbox.counts()["by_version"]
    wait_for(
        lambda: sandbox.counts()["by_version"].get("1.0.0", 0) > first.get("1.0.0", 0) + 20,
        timeout=10,
        what="answers of 1.0.0",
    )
    assert sandbox.counts()["by_version"].get("1.5.0-late", 0) == first.get("1.5.0-late", 0)
    report = check_postmortem(chain, "runbook__high-error-rate", run, alert)
    rollback = {a["step"]: a for a in report["actions"]}["roll-back-last-release"]
    assert rollback["result"] == "done" and rollback["detail"].startswith(f"rolled back {bad} -> {previous}")
    assert report["figures"]["mitigated_by"] == "roll-back-last-release"
    print(f"HighErrorRate chain: {timings(t0, in_alertmanager=t_alert, run_started=t_run, run_ended=t_end)}")

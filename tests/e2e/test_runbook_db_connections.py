"""``runbook__db-connections`` end to end on the sandbox: too many idle connections, ended for real.

The test holds enough idle connections to the sandbox's demo database (as its own role,
``runbook_idle``) to pass the DatabaseConnectionsExhausted rule's 80 % of
``max_connections`` (Prometheus shows it), and runs the runbook through ``scripts/airflow
dags test`` with the conf Alertmanager's webhook gives a run (``alerts.receiver``) instead
of waiting the rule's ``for: 1m``. The runbook is the shipped one, copied with test
settings: idle for more than 2 s, only the test's role, a 60 s verify, Slack to a local
recorder, and (for the real run) no approval asked. A second copy keeps the approval on,
to show that a dry run asks nothing and changes nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from support.slack_server import SlackRecorder
from support.waiting import wait_for

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]
ROLE = "runbook_idle"
OLDER_THAN_S = 2
RULE_SHARE = (
    "sum by (service, instance) (pg_stat_activity_count{service='demo-db'}) / "
    "max by (service, instance) (pg_settings_max_connections{service='demo-db'})"
)


@pytest.fixture(scope="module")
def slack() -> Iterator[SlackRecorder]:
    with SlackRecorder() as recorder:
        yield recorder


@pytest.fixture(scope="module")
def runbook_env(e2e_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, slack) -> dict[str, str]:
    """The e2e environment with an include/ whose db-connections runbooks have the test's settings."""
    include = tmp_path_factory.mktemp("runbook-include")
    shutil.copytree(ROOT / "include", include, dirs_exist_ok=True)
    path = include / "runbooks" / "db-connections.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["steps"][1].update(older_than=f"{OLDER_THAN_S}s", user=ROLE)
    spec["steps"][2].update(timeout="60s", interval="1s")
    spec["notifications"] = {"slack": {"channel": "#incidents", "connection_id": "slack_runbook"}}
    spec["steps"].insert(2, {"action": "wait", "name": "settle", "duration": "1s"})  # deferred, too
    with_approval = {**spec, "name": "db-connections-approval"}
    spec["guards"] = {**spec["guards"], "approval_for_destructive": False}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    (path.parent / "db-connections-approval.yaml").write_text(yaml.safe_dump(with_approval, sort_keys=False))
    return {
        **e2e_env,
        "OPSDAG_INCLUDE_DIR": str(include),
        "AIRFLOW_CONN_SLACK_RUNBOOK": slack.connection_json(),
    }


@pytest.fixture
def demo_db(sandbox) -> Iterator[dict[str, Any]]:
    """libpq keywords of the demo database and a superuser session; the test role made, its sessions ended."""
    conn = json.loads(sandbox.layout.connections_file.read_text())["postgres_demo"]
    kwargs = {"host": conn["host"], "port": conn["port"], "dbname": conn["schema"]}
    with psycopg.connect(**kwargs, user=conn["login"], password=conn["password"], autocommit=True) as su:
        if not su.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone():
            su.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{ROLE}'")
        yield {**kwargs, "superuser": su}
        su.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (ROLE,))


def hold_idle(db: dict[str, Any], count: int) -> list[psycopg.Connection]:
    """``count`` idle sessions of the test's role, once each has been idle for longer than the limit."""
    kwargs = {k: v for k, v in db.items() if k != "superuser"}
    held = [psycopg.connect(**kwargs, user=ROLE, password=ROLE, autocommit=True) for _ in range(count)]
    wait_for(
        lambda: idle_sessions(db, older_than_s=OLDER_THAN_S + 0.5) >= count,
        timeout=15,
        what=f"{count} sessions idle for more than {OLDER_THAN_S} s",
    )
    return held


def idle_sessions(db: dict[str, Any], older_than_s: float = 0) -> int:
    su = db["superuser"]
    su.execute("SELECT pg_stat_clear_snapshot()")
    return su.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND state = 'idle' "
        "AND state_change < clock_timestamp() - make_interval(secs => %s)",
        (ROLE, older_than_s),
    ).fetchone()[0]


def share(prometheus: Any) -> float:
    result = prometheus.query(RULE_SHARE)
    return float(result[0]["value"][1]) if result else 0.0


def alert_conf(dry_run: bool) -> dict[str, Any]:
    """What the alert receiver gives a run (``Alert.to_conf``) for DatabaseConnectionsExhausted."""
    return {
        "alert": {
            "name": "DatabaseConnectionsExhausted",
            "status": "firing",
            "labels": {
                "alertname": "DatabaseConnectionsExhausted",
                "service": "demo-db",
                "severity": "critical",
            },
            "annotations": {"summary": "demo-db uses 85% of max_connections"},
            "startsAt": "2026-11-30T05:00:00+00:00",
            "fingerprint": "00c0ffee00c0ffee",
            "generatorURL": "",
        },
        "dry_run": dry_run,
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


def test_idle_connections_above_80_percent_are_terminated_and_recovery_verified(
    runbook_env, demo_db, sandbox, slack
) -> None:
    su = demo_db["superuser"]
    max_connections = int(su.execute("SHOW max_connections").fetchone()[0])
    in_use = su.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
    ).fetchone()[0]
    count = int(max_connections * 0.85) - in_use
    held = hold_idle(demo_db, count)
    prometheus = sandbox.prometheus
    wait_for(lambda: share(prometheus) > 0.8, timeout=20, what="the rule's share of max_connections > 0.8")
    slack.reset()

    code, output, report, markdown = run_runbook(
        runbook_env, "runbook__db-connections", alert_conf(dry_run=False)
    )

    assert code == 0, output[-4000:]
    # the held sessions are gone: the server lists none, and each one raises when used
    wait_for(lambda: idle_sessions(demo_db) == 0, timeout=10, what="no session of the test's role left")
    for conn in held:
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    steps = actions(report)
    assert report["dry_run"] is False
    diagnose = steps["diagnose-connections"]
    assert (diagnose["kind"], diagnose["result"]) == ("diagnostics", "done")
    assert diagnose["data"]["connections"]["client_backends"] >= count
    assert f"demo/{ROLE}: {count} idle" in diagnose["detail"]
    terminate = steps["terminate-idle"]
    assert (terminate["kind"], terminate["result"], terminate["destructive"]) == ("mitigate", "done", True)
    outcomes = terminate["data"]["termination"]["outcomes"]
    assert sorted(o["outcome"] for o in outcomes) == ["terminated"] * count
    assert {o["target"]["user"] for o in outcomes} == {ROLE}
    verify = steps["verify-connections"]
    assert (steps["settle"]["result"], steps["settle"]["detail"]) == ("done", "waited 1.0 s")
    assert (verify["kind"], verify["result"]) == ("verify", "done")
    assert verify["data"]["value"] < 0.8
    assert report["verify"]["recovered"] is True
    assert report["figures"]["mitigated_by"] == "terminate-idle"
    assert steps["tell-owners"]["result"] == "done"
    assert [e["to"] for e in report["escalations"]] == ["Slack #incidents"]
    assert any(
        "db-connections" in m["text"] and "DatabaseConnectionsExhausted" in m["text"] for m in slack.messages
    )
    assert f"terminated {count} idle connection(s)" in markdown
    assert "Recovered, verified at" in markdown
    assert report["summary"].startswith("DatabaseConnectionsExhausted (db-connections): recovered after")


def test_a_dry_run_asks_no_approval_terminates_nothing_and_says_planned(runbook_env, demo_db, slack) -> None:
    held = hold_idle(demo_db, 5)

    code, output, report, markdown = run_runbook(
        runbook_env, "runbook__db-connections-approval", alert_conf(dry_run=True)
    )

    assert code == 0, output[-4000:]
    for conn in held:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert idle_sessions(demo_db) == 5
    terminate = actions(report)["terminate-idle"]
    assert terminate["result"] == "planned"
    assert terminate["needs_approval"] is True and terminate["approved_by"] is None
    assert "dry run: would terminate 5 idle connection(s)" in terminate["detail"]
    assert {o["outcome"] for o in terminate["data"]["termination"]["outcomes"]} == {"planned"}
    assert actions(report)["diagnose-connections"]["result"] == "done"  # diagnostics still run
    assert report["dry_run"] is True
    assert report["figures"]["changed"] == []
    assert "dry run, nothing was changed" in report["summary"]
    assert "Dry run: nothing was changed" in markdown
    assert "| terminate-idle | mitigate | terminate_idle_connections | planned |" in markdown


def test_an_alert_about_another_database_stops_the_runbook_before_any_change(runbook_env, demo_db) -> None:
    held = hold_idle(demo_db, 3)
    conf = alert_conf(dry_run=False)
    conf["alert"]["labels"]["service"] = "orders-db"  # this runbook's steps act on demo-db

    code, output, report, _ = run_runbook(runbook_env, "runbook__db-connections", conf)

    assert code == 0, output[-4000:]
    for conn in held:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    steps = actions(report)
    assert steps["diagnose-connections"]["detail"] == (
        "the alert is about 'orders-db'; this runbook acts on 'demo-db': nothing done"
    )
    assert steps["terminate-idle"]["result"] == "skipped"
    assert steps["terminate-idle"]["detail"] == "not run: an earlier step stopped the runbook"
    assert report["figures"]["changed"] == []


def test_a_check_that_finds_the_alert_no_longer_holding_stops_the_runbook(runbook_env) -> None:
    # no canary runs in the sandbox here: its error rate has no data, so the alert is not confirmed
    conf = {
        **alert_conf(dry_run=True),
        "alert": {**alert_conf(False)["alert"], "name": "HighCanaryErrorRate"},
    }

    code, output, report, _ = run_runbook(runbook_env, "runbook__canary-errors", conf)

    assert code == 0, output[-4000:]
    steps = actions(report)
    confirm = steps["confirm-errors"]
    assert (confirm["kind"], confirm["result"]) == ("assess", "done")
    assert confirm["detail"] == "the alert no longer holds (no data): the runbook stops here"
    assert steps["tell-release-owners"]["result"] == "skipped"

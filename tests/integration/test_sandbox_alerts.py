"""The sandbox's alerting path for real: the rules in include/alerts, its Prometheus evaluating
them, its Alertmanager posting webhook payloads (version 4) with the sandbox's bearer token.

Alertmanager is pointed at a local recording HTTP server (``SlackRecorder`` records any POST)
standing in for Airflow's ``/opsdag/alerts``; tests/e2e/test_alert_receiver.py covers the
endpoint itself. Two alerts fire through Prometheus: a test-only rule (``vector(1)``, ``for:
0s``) dropped in ``<sandbox>/prometheus/rules/``, and the shipped ``HighCanaryErrorRate``
(its ``for:`` is 30 s) with a canary of the erroring version 1.2.0-errors taking half the load.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.sandbox import SandboxHandle
from support.slack_server import RecordedPost, SlackRecorder
from support.waiting import wait_for

from opsdag.dev.sandbox import alertmanager_server as am
from opsdag.dev.sandbox import prometheus_server as prom
from opsdag.dev.sandbox.connections import alerts_token
from opsdag.dev.sandbox.status import format_status, sandbox_status
from opsdag.platforms.base import CANARY

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "include" / "alerts"
TEST_ALERT = "OpsdagSandboxTestAlert"


def shipped_rules() -> dict[str, dict[str, Any]]:
    rules = {}
    for path in sorted(ALERTS.glob("*.yaml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                rules[rule["alert"]] = rule
    return rules


def test_the_shipped_rules_pass_promtool_and_cover_the_runbooks() -> None:
    files = sorted(str(p) for p in ALERTS.glob("*.yaml"))
    proc = subprocess.run(["promtool", "check", "rules", *files], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rules = shipped_rules()
    assert {"HighErrorRate", "ServiceDown", "DatabaseConnectionsExhausted", "HighCanaryErrorRate"} <= set(
        rules
    )
    for name, rule in rules.items():
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert "service" in rule["annotations"]["summary"], f"{name}: its summary names the service"
    # Every alert a shipped runbook listens to is a shipped rule.
    for path in (REPO / "include" / "runbooks").glob("*.yaml"):
        for alert in yaml.safe_load(path.read_text()).get("alerts", []):
            name = alert["name"] if isinstance(alert, dict) else alert  # a name, or a name with matchers
            assert name in rules, f"{path.name}: no rule in include/alerts fires {name}"


RULE_CASES = Path(__file__).with_name("alert_rules_cases.yaml")


def test_the_shipped_rules_fire_on_faults_and_stay_quiet_when_healthy(tmp_path: Path) -> None:
    cases = yaml.safe_load(RULE_CASES.read_text())
    cases["rule_files"] = sorted(str(p) for p in ALERTS.glob("*.yaml"))
    path = tmp_path / "rules_test.yaml"
    path.write_text(yaml.safe_dump(cases))
    proc = subprocess.run(
        ["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def receiver(sandbox: SandboxHandle) -> Iterator[SlackRecorder]:
    """A recording server standing in for Airflow; the sandbox's Alertmanager posts to it."""
    previous = sandbox.state()["alertmanager"]["webhook_url"]
    with SlackRecorder() as recorder:
        url = am.point_alerts_at(sandbox.layout, f"http://127.0.0.1:{recorder.port}")
        assert url == f"http://127.0.0.1:{recorder.port}/opsdag/alerts"
        try:
            yield recorder
        finally:
            am.point_alerts_at(sandbox.layout, None if previous == am.NOWHERE_URL else previous)


def alertmanager(sandbox: SandboxHandle) -> am.AlertmanagerClient:
    return am.AlertmanagerClient(sandbox.state()["alertmanager"]["url"])


def prometheus_url(sandbox: SandboxHandle) -> str:
    return sandbox.state()["prometheus"]["url"]


def posts_about(recorder: SlackRecorder, alertname: str, status: str) -> list[RecordedPost]:
    """Posts carrying ``alertname`` in state ``status`` (firing|resolved)."""
    return [
        post
        for post in recorder.posts
        if any(
            a["labels"].get("alertname") == alertname and a["status"] == status
            for a in (post.json or {}).get("alerts", [])
        )
    ]


def alert_in(post: RecordedPost, alertname: str) -> dict[str, Any]:
    return next(a for a in post.json["alerts"] if a["labels"]["alertname"] == alertname)


def assert_opsdag_webhook(post: RecordedPost, sandbox: SandboxHandle) -> None:
    assert post.path == "/opsdag/alerts"
    assert post.headers["authorization"] == f"Bearer {alerts_token(sandbox.layout)}"
    assert post.headers["content-type"].startswith("application/json")
    payload = post.json
    assert payload["version"] == "4" and payload["receiver"] == "opsdag"
    assert payload["groupKey"] and isinstance(payload["alerts"], list)
    assert payload["externalURL"] == sandbox.state()["alertmanager"]["url"]


def test_up_runs_alertmanager_and_prometheus_sends_to_it_with_the_rules_loaded(
    sandbox: SandboxHandle,
) -> None:
    st = sandbox.status()
    assert st["alertmanager"]["running"] and st["alertmanager"]["url"].startswith("http://127.0.0.1:")
    assert alertmanager(sandbox).ready()
    assert st["postgres-exporter"]["running"]

    def alertmanagers() -> list[str]:
        with urllib.request.urlopen(f"{prometheus_url(sandbox)}/api/v1/alertmanagers", timeout=5) as resp:
            return [a["url"] for a in json.loads(resp.read())["data"]["activeAlertmanagers"]]

    # Prometheus discovers its Alertmanager a moment after it starts.
    active = wait_for(alertmanagers, 15, what="Prometheus's active Alertmanagers")
    assert active == [f"{st['alertmanager']['url']}/api/v2/alerts"]
    with urllib.request.urlopen(f"{prometheus_url(sandbox)}/api/v1/rules", timeout=5) as resp:
        groups = json.loads(resp.read())["data"]["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(shipped_rules()) <= set(loaded)
    assert all(r["health"] != "err" for r in loaded.values()), loaded
    # DatabaseConnectionsExhausted's metrics come from the sandbox's postgres exporter.
    ratio = "sum by (service) (pg_stat_activity_count) / max by (service) (pg_settings_max_connections)"
    result = wait_for(lambda: sandbox.prometheus.query(ratio), 20, what="connection ratio of demo-db")
    assert result[0]["metric"]["service"] == "demo-db" and 0 < float(result[0]["value"][1]) < 0.8


def test_up_again_keeps_alertmanager_and_restarts_it_when_it_is_gone(sandbox: SandboxHandle) -> None:
    before = sandbox.status()["alertmanager"]
    sandbox.restart_missing()
    assert sandbox.status()["alertmanager"]["pid"] == before["pid"]
    sandbox.stop_component("alertmanager")
    assert not sandbox.status()["up"]
    sandbox.restart_missing()
    after = sandbox.status()
    assert after["up"] and after["alertmanager"]["pid"] != before["pid"]
    assert after["alertmanager"]["url"] == before["url"]  # its old port, so Prometheus still sends there
    assert alertmanager(sandbox).ready()


def test_alerts_go_nowhere_until_pointed_at_airflow_and_status_says_so(sandbox: SandboxHandle) -> None:
    previous = sandbox.state()["alertmanager"]["webhook_url"]
    am.point_alerts_at(sandbox.layout, None)
    st = sandbox_status(sandbox.layout)
    assert st.components["alertmanager"].details["webhook_url"] is None
    assert "posts to nowhere yet" in format_status(st)
    url = am.point_alerts_at(sandbox.layout, "http://127.0.0.1:8080/")
    assert url == "http://127.0.0.1:8080/opsdag/alerts"
    assert sandbox.status()["alertmanager"]["webhook_url"] == url
    assert f"posts to {url}" in format_status(sandbox_status(sandbox.layout))
    assert alerts_token(sandbox.layout) not in am.config_path(sandbox.layout).read_text()
    am.point_alerts_at(sandbox.layout, None if previous == am.NOWHERE_URL else previous)


def write_test_rule(sandbox: SandboxHandle, expr: str) -> Path:
    path = sandbox.layout.prometheus_dir / "rules" / "opsdag-test.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    rule = {
        "alert": TEST_ALERT,
        "expr": expr,
        "for": "0s",
        "labels": {"service": "demo-api", "severity": "info"},
        "annotations": {"summary": "test alert of demo-api", "description": "fires while the test wants"},
    }
    path.write_text(yaml.safe_dump({"groups": [{"name": "opsdag-test", "rules": [rule]}]}))
    prom.reload(prometheus_url(sandbox))
    return path


def test_a_firing_rule_reaches_the_webhook_with_the_token_then_its_resolution(
    sandbox: SandboxHandle, receiver: SlackRecorder
) -> None:
    path = write_test_rule(sandbox, "vector(1)")
    try:
        firing = wait_for(lambda: posts_about(receiver, TEST_ALERT, "firing"), 30, what="firing post")
        post = firing[0]
        assert_opsdag_webhook(post, sandbox)
        assert post.json["status"] == "firing"
        alert = alert_in(post, TEST_ALERT)
        assert alert["labels"] == {"alertname": TEST_ALERT, "service": "demo-api", "severity": "info"}
        assert alert["annotations"]["summary"] == "test alert of demo-api"
        assert alert["fingerprint"] and alert["startsAt"] and alert["endsAt"].startswith("0001-")
        assert post.json["groupLabels"] == {"alertname": TEST_ALERT, "service": "demo-api"}

        # The condition clears (same rule, now an empty result): resolved is sent too.
        write_test_rule(sandbox, "vector(1) < 0")
        resolved = wait_for(lambda: posts_about(receiver, TEST_ALERT, "resolved"), 45, what="resolved post")
        assert_opsdag_webhook(resolved[0], sandbox)
        gone = alert_in(resolved[0], TEST_ALERT)
        assert gone["fingerprint"] == alert["fingerprint"] and gone["startsAt"] == alert["startsAt"]
        assert not gone["endsAt"].startswith("0001-")
    finally:
        path.unlink(missing_ok=True)
        prom.reload(prometheus_url(sandbox))


def test_an_erroring_canary_fires_high_canary_error_rate_for_real_then_resolves(
    sandbox: SandboxHandle, receiver: SlackRecorder
) -> None:
    sandbox.reset()
    driver, router = sandbox.driver(), sandbox.router()
    try:
        driver.start(sandbox.image("1.2.0-errors"), 2)
        wait_for(lambda: driver.readiness().ready, 20, what="canary 1.2.0-errors ready")
        router.set_weight(50)
        # The rule's for: is 30 s, the ratio needs a few seconds of samples, group_wait is 2 s.
        firing = wait_for(
            lambda: posts_about(receiver, "HighCanaryErrorRate", "firing"),
            120,
            0.5,
            what="HighCanaryErrorRate",
        )
        post = firing[0]
        assert_opsdag_webhook(post, sandbox)
        alert = alert_in(post, "HighCanaryErrorRate")
        assert alert["labels"] == {
            "alertname": "HighCanaryErrorRate",
            "service": "demo-api",
            "severity": "critical",
            "track": "canary",
        }
        assert alert["annotations"]["summary"].startswith("the canary of demo-api answers ")
        assert alert["generatorURL"].startswith(prometheus_url(sandbox))

        router.set_weight(0)
        driver.remove(CANARY)
        # Resolved once the rule's 1m rate window holds no canary sample (about a minute).
        resolved = wait_for(
            lambda: posts_about(receiver, "HighCanaryErrorRate", "resolved"), 60, 0.5, what="resolved"
        )
        assert alert_in(resolved[0], "HighCanaryErrorRate")["fingerprint"] == alert["fingerprint"]
    finally:
        sandbox.reset()


def rule_state(sandbox: SandboxHandle, name: str) -> str:
    with urllib.request.urlopen(f"{prometheus_url(sandbox)}/api/v1/rules", timeout=5) as resp:
        groups = json.loads(resp.read())["data"]["groups"]
    return next(r["state"] for g in groups for r in g["rules"] if r["name"] == name)


def down_count(sandbox: SandboxHandle) -> float:
    """ServiceDown's expression for demo-api right now: how many of its instances are down."""
    rule = next(
        r
        for g in yaml.safe_load(
            (Path(__file__).parents[2] / "include" / "alerts" / "services.yaml").read_text()
        )["groups"]
        for r in g["rules"]
        if r.get("alert") == "ServiceDown"
    )
    query = urllib.parse.urlencode({"query": rule["expr"]})
    with urllib.request.urlopen(f"{prometheus_url(sandbox)}/api/v1/query?{query}", timeout=5) as resp:
        result = json.loads(resp.read())["data"]["result"]
    return sum(float(r["value"][1]) for r in result if r["metric"].get("service") == "demo-api")


def test_a_stopped_stable_instance_makes_service_down_pending_on_the_real_metrics(
    sandbox: SandboxHandle,
) -> None:
    """ServiceDown's expression matches the sandbox's own metrics (its for: 30s is promtool's to test).

    Counted against what it says before: an earlier test of the session may have left a target
    down, which keeps the rule firing whatever this test does."""
    sandbox.reset()
    before = down_count(sandbox)
    victim = sandbox.state()["fleet"]["stable"]["instances"][0]["name"]
    try:
        sandbox.stop_component(victim)
        wait_for(lambda: down_count(sandbox) > before, 20, what="ServiceDown's count to grow")
        wait_for(lambda: rule_state(sandbox, "ServiceDown") != "inactive", 20, what="ServiceDown pending")
    finally:
        sandbox.restart_missing()
    wait_for(lambda: down_count(sandbox) <= before, 30, what="ServiceDown's count back")
    assert sandbox.status()["up"]

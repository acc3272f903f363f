"""``POST /opsdag/alerts`` in a real ``airflow standalone`` with opsdag's plugin loaded.

Alertmanager's webhook payloads (version 4) start ``runbook__canary-errors`` runs: the token
is checked first, bad bodies are refused naming the problem, the same alert (repeats, an HA
pair's double send) makes one run, a resolved alert is noted on its run, and the runbook's
rate limit holds. What a test sees is what Airflow holds: the runs and their conf and notes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx
import pytest
import yaml
from support.standalone_run import standalone_airflow

from opsdag.airflow_api import AirflowClient, Credentials

pytestmark = pytest.mark.e2e
DAG = "runbook__canary-errors"
TOKEN = ""  # the sandbox's webhook token, read by the fixture (Airflow gets it as opsdag_alerts)


@pytest.fixture(scope="module")
def airflow(
    e2e_env: dict[str, str], e2e_include, tmp_path_factory: pytest.TempPathFactory, sandbox
) -> Iterator[Credentials]:
    from opsdag.dev.sandbox.connections import alerts_token

    global TOKEN
    TOKEN = alerts_token(sandbox.layout)  # published in the sandbox's connections.json
    state = tmp_path_factory.mktemp("alerts-state")
    env = {**e2e_env, "OPSDAG_STATE_DIR": str(state), "OPSDAG_REPORTS_DIR": str(state / "reports")}
    # These tests send the alert for several services (the rate limit is per service): the
    # shipped runbook takes demo-api's only, so this module's copy takes the alert by name.
    spec_path = e2e_include / "runbooks" / "canary-errors.yaml"
    shipped = spec_path.read_text()
    spec = yaml.safe_load(shipped)
    spec["alerts"] = ["HighCanaryErrorRate"]
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    try:
        with standalone_airflow(env) as credentials:
            yield credentials
    finally:
        spec_path.write_text(shipped)


def alert(fingerprint: str, *, name: str = "HighCanaryErrorRate", status: str = "firing", **labels) -> dict:
    return {
        "status": status,
        "labels": {"alertname": name, "service": "demo-api", **labels},
        "annotations": {"summary": "canary errors"},
        "startsAt": "2026-11-30T02:15:00.5Z",
        "endsAt": "2026-11-30T02:20:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    }


def notification(*alerts: dict) -> dict:
    return {
        "version": "4",
        "status": alerts[0]["status"],
        "groupKey": "{}:{}",
        "receiver": "opsdag",
        "alerts": list(alerts),
    }


def post(
    airflow: Credentials, body: object, token: str | None = "sandbox", raw: bytes | None = None
) -> httpx.Response:
    """POST as Alertmanager; ``token``: "sandbox" (the right one), None (none), "Basic", or a wrong one."""
    headers = {"Content-Type": "application/json"}
    if token == "sandbox":
        headers["Authorization"] = f"Bearer {TOKEN}"
    elif token == "Basic":  # another scheme than Bearer
        headers["Authorization"] = "Basic b3BzZGFnOnNlY3JldA=="
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(
        f"{airflow.url.rstrip('/')}/opsdag/alerts", content=content, headers=headers, timeout=60
    )


def runs(airflow: Credentials) -> dict[str, dict]:
    with AirflowClient(airflow) as client:
        found = client.request("GET", f"/dags/{DAG}/dagRuns", params={"limit": 100})["dag_runs"]
    return {r["dag_run_id"]: r for r in found}


@pytest.mark.parametrize(
    ("token", "message"),
    [(None, "Authorization: Bearer"), ("wrong", "wrong token"), ("Basic", "Authorization: Bearer")],
)
def test_no_token_or_a_wrong_one_is_refused_and_starts_nothing(airflow, token, message):
    before = set(runs(airflow))
    answer = post(airflow, notification(alert("aaaa000000000001")), token=token)
    assert answer.status_code == 401 and message in answer.json()["error"]
    assert set(runs(airflow)) == before


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (b"{not json", 400, "the body is not JSON"),
        (json.dumps({"version": "4", "status": "firing", "alerts": []}).encode(), 400, "groupKey"),
        (b"[" + b" " * (1 << 20) + b"]", 413, "at most"),
    ],
)
def test_bad_bodies_are_refused_naming_the_problem(airflow, raw, status, message):
    before = set(runs(airflow))
    answer = post(airflow, None, raw=raw)
    assert answer.status_code == status and message in answer.json()["error"], answer.text
    assert set(runs(airflow)) == before


def test_an_alert_starts_one_run_however_often_and_by_whomever_it_is_sent(airflow):
    body = notification(alert("bbbb000000000001"))
    first = post(airflow, body)
    assert first.status_code == 200, first.text
    [started] = first.json()["started"]
    run_id = started["run_id"]
    assert run_id == "alert__bbbb000000000001__20261130T021500.500000Z"
    again = post(airflow, body)  # Alertmanager's repeat
    assert [d["run_id"] for d in again.json()["duplicate"]] == [run_id]
    answers: list[httpx.Response] = []
    pair = [threading.Thread(target=lambda: answers.append(post(airflow, body))) for _ in range(2)]
    for thread in pair:  # an HA pair sending at the same moment
        thread.start()
    for thread in pair:
        thread.join()
    assert [a.status_code for a in answers] == [200, 200]
    matching = [r for r in runs(airflow) if r.startswith("alert__bbbb000000000001")]
    assert matching == [run_id]
    conf = runs(airflow)[run_id]["conf"]
    assert conf["alert"]["name"] == "HighCanaryErrorRate" and conf["alert"]["labels"]["service"] == "demo-api"
    assert conf["dry_run"] is True  # the runbook's guard default


def test_several_alerts_in_one_payload_and_a_resolved_one(airflow):
    answer = post(
        airflow,
        notification(
            alert("cccc000000000001", service="billing"), alert("dddd000000000001", name="NoRunbookForThis")
        ),
    )
    body = answer.json()
    assert [s["alert"] for s in body["started"]] == ["HighCanaryErrorRate"]
    assert [n["alert"] for n in body["no_runbook"]] == ["NoRunbookForThis"]
    run_id = body["started"][0]["run_id"]
    resolved = post(airflow, notification(alert("cccc000000000001", status="resolved", service="billing")))
    assert resolved.json()["resolved"][0]["recorded"] is True
    assert "alert HighCanaryErrorRate resolved at 2026-11-30T02:20:00+00:00" in runs(airflow)[run_id]["note"]


def test_the_rate_limit_of_the_runbook_holds_per_service(airflow):
    # canary-errors allows 2 runs per hour per service; "ratelimit" is a service no other test uses
    answers = [
        post(airflow, notification(alert(f"eeee00000000000{i}", service="ratelimit"))).json()
        for i in range(3)
    ]
    assert [len(a["started"]) for a in answers] == [1, 1, 0]
    assert [r["run_id"] for r in answers[2]["rate_limited"]] == [
        "alert__eeee000000000002__20261130T021500.500000Z"
    ]
    assert not any(r.startswith("alert__eeee000000000002") for r in runs(airflow))

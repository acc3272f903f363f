"""Alertmanager's webhook payload and which runbook runs it asks for: pure, no Airflow."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from opsdag.alerts.payload import MAX_BYTES, PayloadRefused, parse
from opsdag.alerts.routing import over_rate_limit, run_id_for, starts_for


def alert(name="HighCanaryErrorRate", fingerprint="a1b2c3d4e5f60718", status="firing", **labels) -> dict:
    return {
        "status": status,
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": "errors"},
        "startsAt": "2026-11-30T02:15:00.123456789Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    }


def payload(*alerts: dict) -> bytes:
    return json.dumps(
        {
            "version": "4",
            "status": "firing",
            "groupKey": '{}:{alertname="x"}',
            "receiver": "opsdag",
            "groupLabels": {},
            "commonLabels": {},
            "externalURL": "http://am",
            "truncatedAlerts": 0,
            "alerts": list(alerts),
        }
    ).encode()


RUNBOOKS = [
    SimpleNamespace(
        name="canary-errors",
        alerts=["HighCanaryErrorRate"],
        guards=SimpleNamespace(dry_run=True, max_runs_per_hour=2),
    ),
    SimpleNamespace(
        name="page",
        alerts=["HighCanaryErrorRate", "ServiceDown"],
        guards=SimpleNamespace(dry_run=False, max_runs_per_hour=5),
    ),
]


def test_a_real_alertmanager_payload_is_read():
    notification = parse(payload(alert(service="demo-api")))
    [a] = notification.alerts
    assert a.name == "HighCanaryErrorRate" and a.labels["service"] == "demo-api"
    assert a.startsAt.isoformat() == "2026-11-30T02:15:00.123456+00:00"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"{not json", "the body is not JSON"),
        (b'{"version": "4"}', "status: Field required"),
        (
            json.dumps({"version": "3", "status": "firing", "groupKey": "g", "alerts": [alert()]}).encode(),
            "version",
        ),
        (
            payload({**alert(), "labels": {"severity": "page"}}),
            "alerts.0.labels: Value error, an alert needs the label alertname",
        ),
        (payload({**alert(), "fingerprint": "not hex!"}), "alerts.0.fingerprint"),
        (payload({**alert(), "startsAt": "2026-11-30T02:15:00"}), "alerts.0.startsAt"),
        (payload(), "alerts: List should have at least 1 item"),
    ],
)
def test_a_payload_of_the_wrong_shape_is_refused_naming_the_field(body, named):
    with pytest.raises(PayloadRefused, match="not an Alertmanager webhook payload") as refused:
        parse(body)
    assert named in str(refused.value)


def test_an_oversized_body_is_refused():
    with pytest.raises(PayloadRefused, match="at most"):
        parse(b" " * (MAX_BYTES + 1))


def test_the_same_alert_always_names_the_same_run_and_another_firing_another():
    first = parse(payload(alert())).alerts[0]
    again = parse(payload(alert())).alerts[0]
    assert run_id_for(first) == run_id_for(again) == "alert__a1b2c3d4e5f60718__20261130T021500.123456Z"
    later = parse(payload({**alert(), "startsAt": "2026-11-30T03:00:00Z"})).alerts[0]
    assert run_id_for(later) != run_id_for(first)


def test_each_alert_starts_every_runbook_listing_it_and_the_others_are_named():
    notification = parse(
        payload(alert(), alert("ServiceDown", "ffff0000ffff0000"), alert("DiskFull", "0000aaaa0000aaaa"))
    )
    starts, unmatched = starts_for(notification.alerts, RUNBOOKS)
    assert [(s.dag_id, s.alert.name) for s in starts] == [
        ("runbook__canary-errors", "HighCanaryErrorRate"),
        ("runbook__page", "HighCanaryErrorRate"),
        ("runbook__page", "ServiceDown"),
    ]
    assert [a.name for a in unmatched] == ["DiskFull"]
    assert starts[0].dry_run is True and starts[1].dry_run is False


def test_the_rate_limit_counts_runs_of_the_same_service():
    [start, _] = starts_for(parse(payload(alert(service="demo-api"))).alerts, RUNBOOKS)[0]
    same = {"alert": {"labels": {"service": "demo-api"}}}
    other = {"alert": {"labels": {"service": "billing"}}}
    assert not over_rate_limit(start, [same, other, other])
    assert over_rate_limit(start, [same, same])

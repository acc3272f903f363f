"""Which runbooks an alert starts: its name, and the label matchers of the runbook's entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from opsdag.alerts.payload import parse
from opsdag.alerts.routing import starts_for
from opsdag.spec.loader import parse_spec
from opsdag.spec.runbook import RunbookSpec

INCLUDE = Path(__file__).resolve().parents[2] / "include"
NOTIFY = [{"action": "notify", "message": "hi"}]


def runbook(name: str, *alerts: object) -> RunbookSpec:
    return RunbookSpec.model_validate({"name": name, "alerts": list(alerts), "steps": NOTIFY})


def problems(*alerts: object) -> list[tuple[str, str]]:
    loaded, errors = parse_spec(RunbookSpec, {"name": "r", "alerts": list(alerts), "steps": NOTIFY}, "r.yaml")
    assert loaded is None
    return [(e.field, e.problem) for e in errors]


def firing(name: str, fingerprint: str, **labels: str) -> dict:
    return {
        "status": "firing",
        "labels": {"alertname": name, **labels},
        "annotations": {},
        "startsAt": "2026-11-30T02:15:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint,
    }


def notification(*alerts: dict):
    return parse(
        json.dumps(
            {
                "version": "4",
                "groupKey": "{}:{alertname}",
                "status": "firing",
                "receiver": "opsdag",
                "groupLabels": {},
                "commonLabels": {},
                "commonAnnotations": {},
                "externalURL": "http://am",
                "truncatedAlerts": 0,
                "alerts": list(alerts),
            }
        ).encode()
    )


def test_a_plain_name_takes_the_alert_whatever_its_labels() -> None:
    spec = runbook("r", "HighErrorRate")
    assert spec.matches_alert("HighErrorRate", {"service": "billing"})
    assert spec.matches_alert("HighErrorRate", {})
    assert not spec.matches_alert("ServiceDown", {"service": "billing"})
    assert spec.alert_names() == ["HighErrorRate"]


@pytest.mark.parametrize(
    ("matchers", "labels", "expected"),
    [
        ({"service": "demo-db"}, {"service": "demo-db", "severity": "critical"}, True),
        ({"service": "demo-db"}, {"service": "orders-db"}, False),
        ({"service": "demo-db"}, {}, False),
        (
            {"service": "demo-db", "severity": "critical"},
            {"service": "demo-db", "severity": "warning"},
            False,
        ),
        ({"service": "=~demo-.*"}, {"service": "demo-api"}, True),
        ({"service": "=~demo"}, {"service": "demo-api"}, False),  # anchored, as Prometheus's =~
        ({"service": "=~demo-(api|db)"}, {"service": "demo-dbx"}, False),
        ({"track": ""}, {"service": "demo-api"}, True),  # a missing label is "", as in Prometheus
        ({"track": ""}, {"track": "canary"}, False),
    ],
)
def test_every_matcher_must_hold(matchers, labels, expected) -> None:
    spec = runbook("r", {"name": "DatabaseConnectionsExhausted", "matchers": matchers})
    assert spec.matches_alert("DatabaseConnectionsExhausted", labels) is expected


def test_entries_are_alternatives() -> None:
    spec = runbook(
        "r",
        {"name": "ServiceDown", "matchers": {"service": "demo-api"}},
        {"name": "ServiceDown", "matchers": {"service": "billing"}},
        "HighErrorRate",
    )
    assert spec.matches_alert("ServiceDown", {"service": "billing"})
    assert not spec.matches_alert("ServiceDown", {"service": "orders"})
    assert spec.alert_names() == ["ServiceDown", "HighErrorRate"]
    assert [str(a) for a in spec.alerts] == [
        'ServiceDown{service="demo-api"}',
        'ServiceDown{service="billing"}',
        "HighErrorRate",
    ]


def test_spec_errors_name_the_field() -> None:
    assert problems({"name": "X", "matchers": {"service": "=~demo-("}})[0][0] == "alerts[0].matchers.service"
    assert (
        "not a regular expression after =~" in problems({"name": "X", "matchers": {"service": "=~("}})[0][1]
    )
    [(where, message)] = problems({"name": "X", "matchers": {"alertname": "Y"}})
    assert (where, message) == (
        "alerts[0].matchers.alertname",
        "the alert's name is the entry's name; remove this matcher",
    )
    [(where, _)] = problems({"name": "X", "matcher": {"service": "a"}})
    assert where == "alerts[0].matcher"
    [(where, _)] = problems({"matchers": {"service": "a"}})
    assert where == "alerts[0].name"
    [(where, message)] = problems("X", {"name": "X"})
    assert (where, message) == ("alerts[1]", "the alert 'X' is listed twice")
    [(where, _)] = problems({"name": "X", "matchers": {"bad-label": "a"}})
    assert where.startswith("alerts[0].matchers")


def test_routing_starts_only_the_runbooks_whose_matchers_hold() -> None:
    db = runbook(
        "db-connections", {"name": "DatabaseConnectionsExhausted", "matchers": {"service": "demo-db"}}
    )
    orders = runbook(
        "orders-db", {"name": "DatabaseConnectionsExhausted", "matchers": {"service": "orders-db"}}
    )
    page = runbook("page", "DatabaseConnectionsExhausted")
    alerts = notification(
        firing("DatabaseConnectionsExhausted", "aaaa0000aaaa0000", service="demo-db"),
        firing("DatabaseConnectionsExhausted", "bbbb0000bbbb0000", service="reports-db"),
    ).alerts
    starts, unmatched = starts_for(alerts, [db, orders, page])
    assert [(s.dag_id, s.alert.labels["service"]) for s in starts] == [
        ("runbook__db-connections", "demo-db"),
        ("runbook__page", "demo-db"),
        ("runbook__page", "reports-db"),
    ]
    assert unmatched == []
    starts, unmatched = starts_for(alerts, [db, orders])
    assert [s.dag_id for s in starts] == ["runbook__db-connections"]
    assert [a.labels["service"] for a in unmatched] == ["reports-db"]


def test_the_shipped_runbooks_take_only_their_service() -> None:
    shipped = [
        RunbookSpec.model_validate(yaml.safe_load(p.read_text()))
        for p in sorted((INCLUDE / "runbooks").glob("*.yaml"))
    ]
    alerts = notification(
        firing("DatabaseConnectionsExhausted", "aaaa0000aaaa0000", service="demo-db"),
        firing("DatabaseConnectionsExhausted", "bbbb0000bbbb0000", service="orders-db"),
        firing("HighErrorRate", "cccc0000cccc0000", service="demo-api"),
        firing("HighErrorRate", "dddd0000dddd0000", service="billing"),
        firing("ServiceDown", "eeee0000eeee0000", service="demo-api"),
    ).alerts
    starts, unmatched = starts_for(alerts, shipped)
    assert sorted((s.dag_id, s.alert.labels["service"]) for s in starts) == [
        ("runbook__db-connections", "demo-db"),
        ("runbook__high-error-rate", "demo-api"),
        ("runbook__service-down", "demo-api"),
    ]
    assert sorted(a.labels["service"] for a in unmatched) == ["billing", "orders-db"]

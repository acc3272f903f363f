"""Which runbook runs an Alertmanager notification starts: pure decisions.

Each firing alert starts every runbook whose spec lists its ``alertname``, with the entry's
label matchers holding when it has some (``RunbookSpec.matches_alert``). The run id is
derived from the alert itself (``alert__<fingerprint>__<startsAt>``): Alertmanager
repeats a notification until it is answered 2xx, and an HA pair sends it twice, but the
same alert always names the same run, which exists at most once per runbook. A resolved
alert names the run its firing started. At most ``guards.max_runs_per_hour`` runs of a
runbook start per hour for the same service (the alert's ``service`` label), counted from
the DAG runs Airflow holds, so the limit survives restarts and holds across API servers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from opsdag.alerts.payload import Alert
from opsdag.spec.runbook import alert_matches


@dataclass(frozen=True)
class Start:
    """One runbook run an alert asks for."""

    runbook: str
    dag_id: str
    run_id: str
    alert: Alert
    dry_run: bool
    max_runs_per_hour: int

    @property
    def service(self) -> str | None:
        return self.alert.labels.get("service")


def run_id_for(alert: Alert) -> str:
    """``alert__<fingerprint>__<startsAt, UTC, to the microsecond>``: one run per alert firing."""
    return f"alert__{alert.fingerprint}__{alert.startsAt.strftime('%Y%m%dT%H%M%S.%fZ')}"


def takes(runbook: Any, alert: Alert) -> bool:
    """Does ``runbook`` (a spec, or anything with ``alerts``: names or matchers) take ``alert``?"""
    matches = getattr(runbook, "matches_alert", None)
    if matches is not None:
        return bool(matches(alert.name, alert.labels))
    return alert_matches(runbook.alerts, alert.name, alert.labels)


def starts_for(alerts: Iterable[Alert], runbooks: Iterable[Any]) -> tuple[list[Start], list[Alert]]:
    """The runs the alerts ask for (firing and resolved alike), and the alerts no runbook takes."""
    runbooks = list(runbooks)
    starts, unmatched = [], []
    for alert in alerts:
        matched = [r for r in runbooks if takes(r, alert)]
        if not matched:
            unmatched.append(alert)
        for runbook in matched:
            starts.append(
                Start(
                    runbook=runbook.name,
                    dag_id=f"runbook__{runbook.name}",
                    run_id=run_id_for(alert),
                    alert=alert,
                    dry_run=runbook.guards.dry_run,
                    max_runs_per_hour=runbook.guards.max_runs_per_hour,
                )
            )
    return starts, unmatched


def over_rate_limit(start: Start, recent_confs: Iterable[dict[str, Any]]) -> bool:
    """Would ``start`` exceed its limit, given the confs of the runbook's runs of the last hour?"""
    same_service = [
        c
        for c in recent_confs
        if ((c or {}).get("alert") or {}).get("labels", {}).get("service") == start.service
    ]
    return len(same_service) >= start.max_runs_per_hour

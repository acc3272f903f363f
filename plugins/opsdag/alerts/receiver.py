"""The receiving end of Alertmanager's webhook inside Airflow's API server (no HTTP here).

``authenticate`` compares the bearer token with the password of the Airflow connection
``opsdag_alerts`` in constant time. ``receive`` starts the runs ``routing`` asks for, each
created and committed in the metadata database before the answer (Alertmanager retries
anything but 2xx, and a retry finds the run and counts it as a duplicate), and records a
resolved alert in the note of the run its firing started, rejecting the approvals that run
still waits for (``approvals``: the destructive step is not performed).
"""

from __future__ import annotations

import hmac
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from opsdag.alerts.payload import Notification
from opsdag.alerts.routing import Start, over_rate_limit, starts_for

log = logging.getLogger(__name__)

TOKEN_CONN_ID = "opsdag_alerts"


class Unauthorized(PermissionError):
    """No token, a wrong one, or no token configured: the message says which."""


class NotReady(RuntimeError):
    """A runbook DAG is not in Airflow yet: answered 503, so Alertmanager retries."""


def configured_token() -> str | None:
    from airflow.models.connection import Connection

    try:
        return Connection.get_connection_from_secrets(TOKEN_CONN_ID).password or None
    except Exception:  # not configured: every request is refused
        return None


def authenticate(header: str | None) -> None:
    expected = configured_token()
    if expected is None:
        raise Unauthorized(f"no token is configured: create the Airflow connection {TOKEN_CONN_ID!r}")
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("send the token as 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise Unauthorized("wrong token")


def runbooks() -> list[Any]:
    from opsdag.paths import include_dir
    from opsdag.spec.loader import load_kind

    return list(load_kind(include_dir(), "runbooks").specs.values())


def receive(notification: Notification) -> dict[str, list[dict[str, Any]]]:
    """Start, count as duplicate, rate-limit or record each alert; what happened, per alert."""
    starts, unmatched = starts_for(notification.alerts, runbooks())
    outcome: dict[str, list[dict[str, Any]]] = {
        "started": [],
        "duplicate": [],
        "rate_limited": [],
        "resolved": [],
        "no_runbook": [{"alert": a.name, "fingerprint": a.fingerprint} for a in unmatched],
    }
    for start in starts:
        entry = {"alert": start.alert.name, "runbook": start.runbook, "run_id": start.run_id}
        if start.alert.status == "resolved":
            entry["recorded"] = record_resolved(start)
            entry["cancelled"] = cancel_approvals(start) if entry["recorded"] else []
            outcome["resolved"].append(entry)
            continue
        outcome[trigger(start)].append(entry)
    return outcome


def trigger(start: Start) -> str:
    """``started``, ``duplicate`` or ``rate_limited``: the run is in the database when this returns."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.exceptions import DagNotFound, DagRunAlreadyExists
    from airflow.utils.types import DagRunTriggeredByType
    from sqlalchemy.exc import IntegrityError

    if exists(start):
        return "duplicate"
    if over_rate_limit(start, recent_confs(start.dag_id)):
        log.warning("%s: rate limit of %d runs per hour reached", start.dag_id, start.max_runs_per_hour)
        return "rate_limited"
    try:
        trigger_dag(
            start.dag_id,
            triggered_by=DagRunTriggeredByType.REST_API,
            triggering_user_name="opsdag-alerts",
            run_id=start.run_id,
            conf={"alert": start.alert.to_conf(), "dry_run": start.dry_run},
        )
    except DagRunAlreadyExists:
        return "duplicate"
    except IntegrityError:  # the other Alertmanager of an HA pair created it a moment ago
        return "duplicate"
    except DagNotFound as exc:
        raise NotReady(f"{start.dag_id} is not in Airflow yet: {exc}") from exc
    log.info("started %s / %s for %s", start.dag_id, start.run_id, start.alert.name)
    return "started"


def exists(start: Start) -> bool:
    from airflow.models.dagrun import DagRun

    return DagRun.find_duplicate(dag_id=start.dag_id, run_id=start.run_id) is not None


def recent_confs(dag_id: str, hours: float = 1.0) -> list[dict[str, Any]]:
    """The conf of every run of ``dag_id`` started from an alert in the last hour."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    since = datetime.now(UTC) - timedelta(hours=hours)
    with create_session() as session:
        rows = session.execute(
            select(DagRun.conf).where(
                DagRun.dag_id == dag_id,
                DagRun.run_id.like("alert\\_\\_%", escape="\\"),
                DagRun.run_after >= since,
            )
        ).all()
    return [row[0] or {} for row in rows]


def ended_at(start: Start) -> str:
    return start.alert.endsAt.isoformat() if start.alert.endsAt else "now"


def cancel_approvals(start: Start) -> list[str]:
    """Reject the approvals the run waits for; note each on the run. The task ids answered."""
    from opsdag.alerts.approvals import cancel_pending

    ended = ended_at(start)
    cancelled = cancel_pending(start.dag_id, start.run_id, ended)
    for task_id in cancelled:
        note(start, f"{task_id} cancelled: the alert resolved at {ended}")
    return cancelled


def record_resolved(start: Start) -> bool:
    """Note the resolution on the run the alert's firing started (False: no such run)."""
    return note(start, f"alert {start.alert.name} resolved at {ended_at(start)}")


def note(start: Start, line: str) -> bool:
    """Add ``line`` to the run's note unless it is there (False: no such run)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalar(
            select(DagRun).where(DagRun.dag_id == start.dag_id, DagRun.run_id == start.run_id)
        )
        if run is None:
            return False
        previous = run.note or ""
        if line not in previous:
            run.note = f"{previous}\n{line}".strip()
    return True

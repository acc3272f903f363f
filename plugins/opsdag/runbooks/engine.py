"""The runbook engine's decisions, without Airflow: guards, metric verdicts, the incident record.

The runbook DAG's step operators (``opsdag.operators.runbook_*``) call these and push
what they return; the postmortem task assembles the record from the steps' pushes.

- ``action_record``: what one step did, as ``IncidentAction`` fields (the XCom ``action``).
- ``approval_decision``: may a destructive step act, given the run's dry run and its
  approval's answer.
- ``metric_verdict``: a PromQL value against a check's bounds, with the numbers in words.
- ``incident_record``: the run's ``IncidentRecord`` from the spec, the run conf and the
  steps' records (a step that left none never ran: recorded as skipped, and why).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opsdag.runbooks.postmortem_record import IncidentRecord
from opsdag.spec.runbook import RunbookSpec, step_id

ACTION_KEY = "action"  # the XCom every step pushes: its IncidentAction fields


def now() -> datetime:
    return datetime.now(UTC)


def action_record(
    step: Any,
    sid: str,
    *,
    result: str,
    started_at: datetime | None,
    detail: str = "",
    needs_approval: bool = False,
    approved_by: str | None = None,
    data: dict[str, Any] | None = None,
    ended_at: datetime | None = None,
) -> dict[str, Any]:
    """One step's record, JSON-ready (an XCom), with the fields of ``IncidentAction``."""
    return {
        "step": sid,
        "action": step.action,
        "kind": step.step_kind,
        "result": result,
        "started_at": started_at.isoformat() if started_at else None,
        "ended_at": (ended_at or now()).isoformat() if started_at else None,
        "detail": detail,
        "destructive": step.destructive,
        "needs_approval": needs_approval,
        "approved_by": approved_by,
        "data": data or {},
    }


# -- guards --------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What a destructive step does: ``act``, ``plan`` (dry run) or ``skip`` (not approved)."""

    mode: str
    reason: str
    approved_by: str | None = None


def approval_decision(*, dry_run: bool, needs_approval: bool, answer: dict[str, Any] | None) -> Decision:
    """Dry run: plan only. Approval needed: act only on an ``Approve`` (``answer`` is the HITL result)."""
    if dry_run:
        return Decision("plan", "dry run: planned only, nothing changed")
    if not needs_approval:
        return Decision("act", "no approval asked: guards.approval_for_destructive is off")
    if not answer:
        return Decision("skip", "no answer from the approval: not approved, nothing changed")
    chosen = list(answer.get("chosen_options") or [])
    user = answer.get("responded_by_user") or {}
    who = (user.get("name") or user.get("id")) if isinstance(user, dict) else str(user)
    who = who or "timeout"
    if chosen == ["Approve"]:
        return Decision("act", f"approved by {who}", approved_by=who)
    return Decision("skip", f"rejected by {who} ({', '.join(chosen) or 'no option'}): nothing changed")


# -- metrics -------------------------------------------------------------------------


def metric_verdict(value: float | None, *, above: float | None, below: float | None) -> tuple[bool, str]:
    """``(within bounds, reason)``: e.g. ``(False, "0.86 is not below 0.8")``; no data is never within."""
    if value is None:
        return False, "no data"
    failures = []
    if above is not None and not value > above:
        failures.append(f"{value:g} is not above {above:g}")
    if below is not None and not value < below:
        failures.append(f"{value:g} is not below {below:g}")
    if failures:
        return False, "; ".join(failures)
    bounds = ([f"> {above:g}"] if above is not None else []) + ([f"< {below:g}"] if below is not None else [])
    return True, f"{value:g} {' and '.join(bounds)}"


# -- escalation ----------------------------------------------------------------------

ESCALATE_KEY = "escalate"  # in a step record's data: the runbook stopped without restoring the service


def escalation_reason(records: list[dict[str, Any] | None]) -> str | None:
    """Why people must be called, from the records of the steps before (None: the runbook did its job).

    A failed step, a step that stopped the runbook without acting (``data.escalate``: another
    actor, no recent release), or a verify check that did not see the recovery.
    """
    reasons = []
    for record in records:
        if not record:
            continue
        data = record.get("data") or {}
        if record.get("result") == "failed":
            reasons.append(f"{record['step']} failed: {record.get('detail', '')}")
        elif data.get(ESCALATE_KEY):
            reasons.append(f"{record['step']}: {record.get('detail', '')}")
        elif record.get("kind") == "verify" and record.get("result") not in ("done", "planned"):
            reasons.append(f"{record['step']} did not see the recovery: {record.get('detail', '')}")
    return "; ".join(reasons) or None


# -- the record ----------------------------------------------------------------------


def alert_of(conf_alert: dict[str, Any] | None, *, run_started: datetime) -> dict[str, Any]:
    """The run's alert for the record; a manual run without one is named so, starting with the run."""
    alert = dict(conf_alert or {})
    if not alert.get("name") and not (alert.get("labels") or {}).get("alertname"):
        alert["name"] = "manual run (no alert)"
    alert.setdefault("startsAt", run_started.isoformat())
    return alert


def incident_record(
    spec: RunbookSpec,
    *,
    run_id: str,
    conf_alert: dict[str, Any] | None,
    dry_run: bool,
    records: dict[str, dict[str, Any] | None],
    run_started: datetime,
    states: dict[str, str] | None = None,
) -> IncidentRecord:
    """The run's record: every step in spec order, its own record, or why it has none.

    A verify step's verdict becomes the record's ``verify``; a notify step that reached
    people becomes an escalation (to whom, when, the message).

    ``states`` (task id: state) tells a step that failed before it could record (failed)
    from one that never ran (skipped).
    """
    actions, verify, escalations = [], None, []
    for i, step in enumerate(spec.steps):
        sid = step_id(i, step)
        record = records.get(sid)
        if not record:
            result, detail = _unrecorded((states or {}).get(sid), (states or {}).get(approval_task_id(sid)))
            record = action_record(
                step,
                sid,
                result=result,
                started_at=None,
                detail=detail,
                needs_approval=step.destructive and spec.guards.approval_for_destructive,
            )
        actions.append(record)
        to = (record.get("data") or {}).get("escalated_to")
        if step.step_kind == "escalate" and record["result"] == "done" and to and record.get("ended_at"):
            escalations.append({"at": record["ended_at"], "to": to, "reason": getattr(step, "message", "")})
        if step.step_kind == "verify" and record.get("started_at"):
            verify = (record.get("data") or {}).get("verification") or {
                "recovered": False,
                "at": record.get("ended_at"),
                "detail": record.get("detail", ""),
            }
    return IncidentRecord.model_validate(
        {
            "runbook": spec.name,
            "run_id": run_id,
            "alert": alert_of(conf_alert, run_started=run_started),
            "dry_run": dry_run,
            "actions": actions,
            "verify": verify,
            "escalations": escalations,
        }
    )


def approval_task_id(sid: str) -> str:
    """The task that asks a person before the destructive step ``sid``."""
    return f"approve_{sid}"


def _unrecorded(state: str | None, approval_state: str | None = None) -> tuple[str, str]:
    """A step without a record: why, from its task state (and its approval's)."""
    if approval_state == "failed":
        return "skipped", "not run: its approval task failed (see its log); nothing was changed"
    if state == "failed":
        return "failed", "the task failed before it could record a result (see its log)"
    if state == "upstream_failed":
        return "skipped", "not run: an earlier step or its approval failed"
    if state == "skipped":
        return "skipped", "not run: an earlier step stopped the runbook"
    return "skipped", "not run" + (f" (task {state})" if state else "")


def failed_steps(record: IncidentRecord) -> list[str]:
    return [a.step for a in record.actions if a.result == "failed"]

"""A resolved alert answers the approvals its run still waits for: Reject, for the people.

When Alertmanager says an alert resolved, nobody needs to approve the destructive step its
runbook run is waiting on any more. ``cancellations`` (pure) picks, among the run's
Human-in-the-loop requests, those still waiting for an answer and answers each with the
option that means "do not act" (``Reject``), in the name of ``alertmanager (cancelled: the
alert resolved at <endsAt>)``: the step then records itself as skipped ("rejected by
alertmanager (cancelled: ...)") and the postmortem says so. An answered request is left
alone, so a repeated resolved notification answers nothing twice.

``cancel_pending`` is the I/O: it reads the run's parked task instances and records each
answer with the function Airflow's REST route ``PATCH .../hitlDetails`` runs
(``update_hitl_detail``), so the task resumes exactly as after an answer in the UI.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

RESPONDER_ID = "alertmanager"
DO_NOT_ACT = "Reject"  # ApprovalOperator.REJECT
WAITING_STATES = ("deferred", "awaiting_input")  # parked: by a trigger (older) or for input (3.3)


@dataclass(frozen=True)
class Asked:
    """One Human-in-the-loop request of the run, as the database holds it."""

    task_id: str
    map_index: int
    state: str | None
    options: tuple[str, ...]
    answered: bool


@dataclass(frozen=True)
class Cancel:
    """Answer ``task_id`` with ``option`` in the name of ``responder``."""

    task_id: str
    map_index: int
    option: str
    responder: str


def responder(ended: str) -> str:
    return f"{RESPONDER_ID} (cancelled: the alert resolved at {ended})"


def cancellations(asked: list[Asked], ended: str) -> list[Cancel]:
    """The answers to give: each unanswered, parked request that offers ``Reject``.

    A request already answered (by a person, a timeout or an earlier resolved notification)
    is left alone; one that is not parked is not answered (a finished or cleared task must
    not be resumed); one without a ``Reject`` option is not an approval and is left to people.
    """
    return [
        Cancel(a.task_id, a.map_index, DO_NOT_ACT, responder(ended))
        for a in asked
        if not a.answered and a.state in WAITING_STATES and DO_NOT_ACT in a.options
    ]


def cancel_pending(dag_id: str, run_id: str, ended: str) -> list[str]:
    """Reject the run's approvals still waiting; the task ids answered (none: nothing waited)."""
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.utils.session import create_session
    from sqlalchemy import select
    from sqlalchemy.orm import joinedload

    with create_session() as session:
        tis = session.scalars(
            select(TI)
            .where(TI.dag_id == dag_id, TI.run_id == run_id, TI.state.in_(WAITING_STATES))
            .options(joinedload(TI.hitl_detail))
        ).all()
        asked = [
            Asked(
                ti.task_id,
                ti.map_index,
                str(ti.state.value if hasattr(ti.state, "value") else ti.state),
                tuple(ti.hitl_detail.options or ()),
                ti.hitl_detail.response_received,
            )
            for ti in tis
            if ti.hitl_detail is not None
        ]
    answered = []
    for cancel in cancellations(asked, ended):
        if _answer(dag_id, run_id, cancel):
            answered.append(cancel.task_id)
    return answered


def _answer(dag_id: str, run_id: str, cancel: Cancel) -> bool:
    """Record the answer as the REST route does (row locks, validation, the task's resume)."""
    from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
    from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail
    from airflow.utils.session import create_session
    from fastapi import HTTPException

    try:
        with create_session() as session:
            update_hitl_detail(
                dag_id=dag_id,
                dag_run_id=run_id,
                task_id=cancel.task_id,
                update_hitl_detail_payload=UpdateHITLDetailPayload(chosen_options=[cancel.option]),
                user=_Responder(cancel.responder),
                session=session,
                map_index=cancel.map_index,
            )
    except HTTPException as exc:  # 409: answered meanwhile; 403: assigned to named people
        log.info("%s / %s / %s not answered: %s", dag_id, run_id, cancel.task_id, exc.detail)
        return False
    log.info("%s / %s / %s: %s by %s", dag_id, run_id, cancel.task_id, cancel.option, cancel.responder)
    return True


class _Responder:
    """The user the route records as responder (``get_id``/``get_name`` of Airflow's ``BaseUser``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def get_id(self) -> str:
        return RESPONDER_ID

    def get_name(self) -> str:
        return self.name

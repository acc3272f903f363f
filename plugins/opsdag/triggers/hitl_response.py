"""Wait for a person's answer to a HITL request from inside a trigger, as Airflow's HITLTrigger does.

The event payloads are the provider's (``HITLTriggerEventSuccessPayload`` /
``HITLTriggerEventFailurePayload``), so ``HITLOperator.execute_complete`` reads them as
its own: the chosen options (or the defaults, recorded, once the response timeout has
passed), else a ``timeout`` error.

Why not the provider's ``HITLTrigger`` itself: it reads the response only through the
supervisor's execution-API channel, which the triggerer relays but ``dag.test()`` (and
``airflow dags test``) does not: its in-process supervisor answers "Unhandled request".
There, and only there (``None`` for an answer), the response is read from the metadata
database that ``dag.test()`` shares, so a response recorded from outside (the REST API,
the UI) still reaches the trigger. On Airflow 3.3 a response to a deferred task resumes
it by itself (the REST route calls ``handle_event_submit``); this polling then matters
only for the response timeout and for ``dag.test()``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from uuid import UUID

from airflow.sdk.timezone import utcnow


def read_response(ti_id: UUID) -> Any:
    """The task's HITL response (``HITLDetailResponse``-like), through the execution API."""
    from airflow.sdk.execution_time.hitl import get_hitl_detail_content_detail

    detail = get_hitl_detail_content_detail(ti_id=ti_id)
    return detail if detail is not None else _read_from_database(ti_id)


def _read_from_database(ti_id: UUID) -> Any:
    """``dag.test()`` only: its supervisor does not relay the request; it shares this database."""
    from airflow.models.hitl import HITLDetail
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.get(HITLDetail, ti_id)
        if row is None:
            return None
        return _Response(
            response_received=row.response_received,
            chosen_options=list(row.chosen_options or []) or None,
            params_input=dict(row.params_input or {}),
            responded_at=row.responded_at,
            responded_by_user=row.responded_by_user,
        )


class _Response:
    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


def record_defaults(ti_id: UUID, defaults: list[str], params_input: dict[str, Any]) -> datetime:
    """Record the defaults as the response (as HITLTrigger does on timeout); when it was recorded."""
    from airflow.sdk.execution_time.hitl import update_hitl_detail_response

    recorded = update_hitl_detail_response(ti_id=ti_id, chosen_options=defaults, params_input=params_input)
    return getattr(recorded, "responded_at", None) or utcnow()


def answered(detail: Any) -> dict[str, Any] | None:
    """The success payload of a recorded response, or None while there is none."""
    if detail is None or not (detail.response_received and detail.chosen_options):
        return None
    user = detail.responded_by_user
    if user is not None and not isinstance(user, dict):
        user = {"id": user.id, "name": user.name}
    return {
        "chosen_options": list(detail.chosen_options),
        "params_input": detail.params_input or {},
        "responded_at": detail.responded_at,
        "responded_by_user": user,
        "timedout": user is None,  # a response without a person is the timeout's defaults
    }


async def wait_for_answer(
    *,
    ti_id: UUID,
    defaults: list[str] | None,
    params: dict[str, Any],
    timeout_datetime: datetime | None,
    poke_interval: float,
    log: Any,
    **_: Any,
) -> dict[str, Any]:
    """Poll until a response is recorded or the timeout applies; the HITL event payload.

    A failure to read (the API server restarting) is logged and retried.
    """
    while True:
        timed_out = timeout_datetime is not None and utcnow() >= timeout_datetime
        try:
            payload = answered(await asyncio.to_thread(read_response, ti_id))
        except Exception as exc:
            log.warning("cannot read the approval's response yet: %s: %s", type(exc).__name__, exc)
            payload = None
        if payload is not None:
            return payload
        if timed_out:
            if defaults is None:
                return {
                    "error": "The timeout has passed, and the response has not yet been received.",
                    "error_type": "timeout",
                }
            values = {k: v.get("value") if isinstance(v, dict) else v for k, v in params.items()}
            try:
                responded_at = await asyncio.to_thread(record_defaults, ti_id, defaults, values)
            except Exception as exc:
                log.warning("the timeout's defaults %s not recorded: %s", defaults, exc)
                responded_at = utcnow()
            return {
                "chosen_options": defaults,
                "params_input": values,
                "responded_at": responded_at,
                "responded_by_user": None,
                "timedout": True,
            }
        await asyncio.sleep(poke_interval)

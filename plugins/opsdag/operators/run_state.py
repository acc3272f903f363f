"""What the other tasks of this run did: their states and the errors they recorded.

The one place operators read their run's task states (through the Task SDK, since Airflow 3
tasks have no database access) and the one way a failing operator records its own error
for the report and the notifications (the XCom ``error``). A task process killed from
outside records nothing: its state says that it failed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from airflow.sdk.exceptions import AirflowSkipException, TaskDeferred

ERROR_KEY = "error"
FAILED_STATES = ("failed", "upstream_failed")
_ERROR_MAX = 2000


def task_states(context: Any, task_ids: list[str]) -> dict[str, str]:
    """States of ``task_ids`` in this run (``{}`` where the Task SDK cannot tell)."""
    ti = context["ti"]
    try:
        states = ti.get_task_states(dag_id=ti.dag_id, task_ids=task_ids, run_ids=[ti.run_id])
    except Exception:
        return {}
    run_states = states.get(ti.run_id, states) if isinstance(states, dict) else {}
    return {k: str(v) for k, v in run_states.items() if v is not None}


def run_has_failed(context: Any) -> bool:
    """Whether any task of this run has failed (or could not run because one did)."""
    ti = context["ti"]
    return bool(ti.get_ti_count(dag_id=ti.dag_id, run_ids=[ti.run_id], states=list(FAILED_STATES)))


def record_error(context: Any, exc: BaseException, log: Any = None) -> None:
    """Keep ``exc`` as this task's XCom ``error``; a failure to record never hides the failure itself."""
    message = f"{type(exc).__name__}: {exc}".strip()
    try:
        context["ti"].xcom_push(key=ERROR_KEY, value=message[:_ERROR_MAX])
    except Exception:
        if log is not None:
            log.warning("could not record the failure in XCom")


def first_failure(context: Any, task_ids: list[str]) -> tuple[str | None, str | None]:
    """(task id, error) of the first of ``task_ids`` (in run order) that failed in this run.

    A task's own record says why; without one (a killed process) its state says that it
    failed. Where states are unavailable only recorded errors count: a missing result
    is no proof of failure (a passing gate returns nothing, a skipped task neither).
    """
    ti = context["ti"]
    states = task_states(context, task_ids)
    for task_id in task_ids:
        error = ti.xcom_pull(task_ids=task_id, key=ERROR_KEY)
        if error:
            return task_id, error
        if states.get(task_id) == "failed":
            return task_id, "the task failed without recording an error (its process ended: see its log)"
    return None, None


@contextlib.contextmanager
def recording_errors(context: Any, log: Any = None) -> Iterator[None]:
    """Record any failure raised inside as this task's error, then let it go on (skips and deferrals pass)."""
    try:
        yield
    except (TaskDeferred, AirflowSkipException):
        raise
    except BaseException as exc:
        record_error(context, exc, log)
        raise


class RecordsItsError:
    """Mixin for operators: a failure, in ``run`` or after a deferral, is kept as the XCom ``error``.

    Subclasses implement ``run(context)`` instead of ``execute``; their ``execute_complete``
    (or any method a trigger resumes) is covered too. The report then names the failing
    step with its own words.
    """

    def execute(self, context: Any) -> Any:
        with recording_errors(context, getattr(self, "log", None)):
            return self.run(context)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Any) -> Any:
        with recording_errors(context, getattr(self, "log", None)):
            return super().resume_execution(next_method, next_kwargs, context)  # type: ignore[misc]

    def run(self, context: Any) -> Any:
        raise NotImplementedError

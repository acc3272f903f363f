"""The first and last tasks of a release: the request is checked before anything changes, and the
run ends failed unless the new version was promoted."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from opsdag.operators.run_state import RecordsItsError
from opsdag.spec.request import RequestRefused, validate_request
from opsdag.spec.service import ServiceSpec

# Outcomes of a release run that end it "success" (see the report's status).
SUCCESSFUL_OUTCOMES = ("promoted", "planned")


class ValidateRequestOperator(RecordsItsError, BaseOperator):
    """Refuse a bad run conf (unknown keys, another repository's image) before anything changes.

    The Params form checks each field; this checks the conf as one object, for runs created
    any other way. A refusal fails the task without retry and is recorded as its error
    (``field: problem`` lines), so the report and the run's note say what was wrong.
    Returns the validated request (a dict), which every later task reads.

    :param service: the service's spec.
    """

    ui_color = "#eeeeee"

    def __init__(self, *, service: ServiceSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service = service

    def run(self, context: Any) -> dict[str, Any]:
        conf = {**dict(context["params"]), **dict(context["dag_run"].conf or {})}
        try:
            request = validate_request(conf, self.service)
        except RequestRefused as exc:
            raise AirflowFailException(str(exc)) from None
        self.log.info("release request of %s: %s", self.service.name, request.model_dump())
        return request.model_dump()


class ReleaseOutcomeOperator(BaseOperator):
    """End the run failed unless the new version was promoted (or it was a dry run).

    Reads the status the report task decided (its XCom ``summary``), so the run's state
    and its report never disagree.
    """

    ui_color = "#eeeeee"

    def __init__(self, *, report_task_id: str = "report", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.report_task_id = report_task_id

    def execute(self, context: Any) -> str:
        summary = context["ti"].xcom_pull(task_ids=self.report_task_id, key="summary") or {}
        status = summary.get("status", "failed")
        if status not in SUCCESSFUL_OUTCOMES:
            raise AirflowFailException(f"release {status}: {summary.get('text', 'see the report')}")
        return status

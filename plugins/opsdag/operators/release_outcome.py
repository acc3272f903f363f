"""The last task of a release: the run ends failed unless the new version was promoted."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

# Outcomes of a release run that end it "success" (see the report's status).
SUCCESSFUL_OUTCOMES = ("promoted", "planned")


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

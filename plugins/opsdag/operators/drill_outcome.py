"""The drill DAG's last two steps: the report (always written) and the notification.

Both run whatever happened before them (``all_done``); ``notify`` fails the run when the
drill did, after the message is sent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from opsdag.operators.database_base import slack_conn_id
from opsdag.operators.drill import DrillOperator, now_iso
from opsdag.operators.run_state import task_states
from opsdag.reports.drill_report import PHASES as DRILL_TASKS


class DrillReportOperator(DrillOperator):
    """Write the Markdown + JSON report, make its summary the run's note (always runs)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)

    def execute(self, context: Any) -> dict[str, Any]:
        from opsdag.reports.drill_report import build_drill_report, write_drill_report

        ti, dag_run = context["ti"], context["dag_run"]

        def result_of(task_id: str, key: str) -> Any:  # a failed step's result is under its own key
            return ti.xcom_pull(task_ids=task_id) or ti.xcom_pull(task_ids=task_id, key=key)

        report = build_drill_report(
            dag_id=dag_run.dag_id,
            run_id=dag_run.run_id,
            database=self.database.name,
            started_at=(dag_run.start_date or datetime.now(UTC)).isoformat(),
            finished_at=now_iso(),
            states=task_states(context, DRILL_TASKS),
            errors={t: e for t in DRILL_TASKS if (e := ti.xcom_pull(task_ids=t, key="error"))},
            pick=ti.xcom_pull(task_ids="pick_backup"),
            provision=ti.xcom_pull(task_ids="provision"),
            restore=ti.xcom_pull(task_ids="restore"),
            verification=result_of("verify", "verification"),
            measure=result_of("measure", "measure"),
            teardown=result_of("teardown", "teardown"),
        )
        written = write_drill_report(report)
        return self.publish_report(context, report, written)


class DrillNotifyOperator(DrillOperator):
    """Send the result with RTO/RPO to Slack (failures always, loudly); then fail if the drill did."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)

    def execute(self, context: Any) -> dict[str, Any]:
        from opsdag.notify.backup_messages import drill_message
        from opsdag.notify.slack import send_slack
        from opsdag.reports.drill_record import DrillReport, unwritten_report

        dag_run = context["dag_run"]
        written = context["ti"].xcom_pull(task_ids="report")
        if written:
            report = DrillReport.model_validate(written)
        else:
            report = unwritten_report(dag_run.dag_id, dag_run.run_id, self.database.name)
        text, blocks = drill_message(report, report_file=(written or {}).get("markdown"))
        notified = False
        if report.result != "passed" or self.database.notifications.on_success:
            notified = send_slack(slack_conn_id(self.database), text, blocks=blocks)
        if report.result != "passed":
            raise AirflowFailException(report.summary)
        return {"result": report.result, "notified": notified}

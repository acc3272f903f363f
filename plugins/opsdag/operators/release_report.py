"""Write the release report from what the run's tasks recorded, and tell people the outcome.

The report task always runs (trigger rule all_done) and changes nothing on the platform.
It gathers the run's XComs and task states, reads the monitoring figures from Prometheus,
and leaves every decision (status, stages, rollback reason, incidents, wording) to the
pure functions of :mod:`opsdag.reports`; then it writes
``<reports root>/<dag_id>/<run_id>.md|.json``, makes the summary the run's note where the
Airflow API is reachable, and sends the outcome to Slack.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from opsdag.operators.run_state import ERROR_KEY, first_failure, task_states
from opsdag.operators.service_base import ServiceOperator


class ReleaseReportOperator(ServiceOperator):
    """Gather the release record, write the report, set the run note, notify.

    :param service: the service's spec.
    """

    def run(self, context: Any) -> dict[str, Any]:
        from opsdag.notify.notifiers import notify_release_outcome
        from opsdag.reports.release_facts import build_record
        from opsdag.reports.release_files import write_release_report
        from opsdag.reports.release_markdown import note_markdown
        from opsdag.reports.release_wording import summary
        from opsdag.reports.run_note import set_run_note

        record = build_record(self.gather(context))
        written = write_release_report(record)
        text = summary(record)
        self.log.info("release %s: %s", record.status, text)
        self.log.info("report written to %s and %s", written.markdown, written.json)
        # Airflow's UI renders a note as Markdown: the summary quotes errors and image references.
        set_run_note(record.dag_id, record.run_id, note_markdown(text), log=self.log)
        notify_release_outcome(self.service, record)
        result = {
            "status": record.status,
            "text": text,
            "markdown": str(written.markdown),
            "json": str(written.json),
        }
        context["ti"].xcom_push(key="summary", value=result)
        return result

    def gather(self, context: Any):
        """What this run's tasks recorded, as :class:`~opsdag.reports.release_facts.ReleaseFacts`."""
        from opsdag.reports.release_facts import ReleaseFacts
        from opsdag.strategies.stages import release_task_ids

        ti = context["ti"]
        strategy = self.request(context).get("strategy") or context["params"].get("strategy")
        strategy = strategy if strategy in self.service.strategies() else self.service.strategy
        task_ids = release_task_ids(self.service, strategy)
        started = context["dag_run"].start_date or datetime.now(UTC)
        finished = datetime.now(UTC)
        return ReleaseFacts(
            service=self.service,
            dag_id=context["dag"].dag_id,
            run_id=context["run_id"],
            started_at=started,
            finished_at=finished,
            params=dict(context["params"]),
            request=self.request(context) or None,
            preflight=ti.xcom_pull(task_ids="preflight", key="preflight"),
            readiness=ti.xcom_pull(task_ids=f"{strategy}.deploy", key="readiness"),
            verdicts={t: ti.xcom_pull(task_ids=t, key="verdict") for t in task_ids if t.endswith(".gate")},
            splits={
                t: (ti.xcom_pull(task_ids=t) or {}).get("said") for t in task_ids if t.endswith(".set_weight")
            },
            states=task_states(context, task_ids),
            rollback=ti.xcom_pull(task_ids="rollback", key="rollback"),
            post_promotion=ti.xcom_pull(task_ids="post_promotion_check", key="post_promotion"),
            failure=first_failure(context, task_ids),
            rollback_error=ti.xcom_pull(task_ids="rollback", key=ERROR_KEY),
            monitoring=self.monitoring(started, finished),
        )

    def monitoring(self, started: datetime, finished: datetime) -> dict[str, float | None]:
        """Figures of the service over the release window; None is "no data", never 0."""
        from opsdag.analysis.monitoring import monitoring_queries, monitoring_window_s
        from opsdag.hooks.prometheus import PrometheusHook

        analysis = self.service.analysis
        window_s = monitoring_window_s((finished - started).total_seconds())
        try:
            queries = monitoring_queries(analysis.monitoring, self.driver.metric_selectors(), window_s)
        except Exception as exc:  # the report is written without figures rather than not at all
            self.log.warning("monitoring figures unavailable: %s", exc)
            return {}
        if not queries:
            return {}
        figures = PrometheusHook(analysis.prometheus_conn_id).query_figures(queries)
        return {**figures, "window_s": window_s}

"""The runbook run's last task: its postmortem from what the steps recorded, whatever happened.

Runs after every step (trigger rule ``all_done``), assembles the ``IncidentRecord``
(``runbooks.engine.incident_record``), writes the Markdown and JSON postmortem
(``runbooks.postmortem.write_postmortem``, with the runbook's ``postmortem.template`` under
``include/`` when it sets one) and then fails when a step or an approval task failed, or
the runbook's template is missing or broken (the postmortem is then written with the
default template, and the error names the file), so that the run's state says it too (it
is the DAG's only leaf).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from opsdag.operators.run_state import task_states
from opsdag.runbooks.engine import ACTION_KEY, approval_task_id, failed_steps, incident_record
from opsdag.spec.runbook import RunbookSpec


class RunbookPostmortemOperator(BaseOperator):
    """Write the run's postmortem (``<reports root>/runbook__<name>/<run_id>.md``/``.json``).

    :param runbook: the runbook's spec.
    """

    ui_color = "#e8e8f3"

    def __init__(self, *, runbook: RunbookSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runbook = runbook

    def execute(self, context: Any) -> dict[str, Any]:
        from opsdag.paths import include_dir
        from opsdag.runbooks.postmortem import postmortem_figures, write_postmortem_with

        ti, params = context["ti"], context["params"]
        ids = self.runbook.step_ids()
        records = {sid: ti.xcom_pull(task_ids=sid, key=ACTION_KEY) for sid in ids}
        states = task_states(context, [*ids, *(approval_task_id(sid) for sid in ids)])
        dag_run = context.get("dag_run")
        started = getattr(dag_run, "start_date", None) or datetime.now(UTC)
        record = incident_record(
            self.runbook,
            run_id=context["run_id"],
            conf_alert=params.get("alert"),
            dry_run=bool(params.get("dry_run", self.runbook.guards.dry_run)),
            records=records,
            run_started=started,
            states=states,
        )
        setting = self.runbook.postmortem.template
        template = include_dir() / setting if setting else None
        paths, template_problem = write_postmortem_with(record, template)
        summary = postmortem_figures(record).summary
        self.log.info("postmortem: %s (%s)", summary, paths.markdown)
        failed = failed_steps(record) + [
            t for t, state in states.items() if state == "failed" and t not in ids
        ]
        problems = [f"{', '.join(failed)} failed"] if failed else []
        if template_problem:
            problems.append(f"postmortem.template: {template_problem} (written with the default template)")
        if problems:
            raise AirflowFailException(f"{'; '.join(problems)}; postmortem at {paths.markdown}: {summary}")
        return {"summary": summary, "markdown": str(paths.markdown), "json": str(paths.json)}

"""The branch of a release run: the resolved strategy's task group runs, the others are skipped whole."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import DownstreamTasksSkipped

from opsdag.operators.service_base import REQUEST_TASK


class StrategyBranchOperator(BaseOperator):
    """Run the task group of the strategy ``validate_request`` resolved; skip every task of the others.

    Unlike Airflow's branch operators, which skip only the tasks right after them, this
    skips the other groups whole: their stage tasks run with trigger rule all_done (so that
    a failure leaves the next stages skipped, not upstream_failed) and would otherwise
    each start a worker only to skip themselves.

    :param strategies: the strategies this DAG has a task group for.
    """

    ui_color = "#f5e6ff"

    def __init__(self, *, strategies: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.strategies = list(strategies)

    def execute(self, context: Any) -> str:
        chosen = (context["ti"].xcom_pull(task_ids=REQUEST_TASK) or {}).get("strategy")
        if chosen not in self.strategies:  # validate_request refuses this; never guess
            raise ValueError(f"strategy {chosen!r} has no task group here ({', '.join(self.strategies)})")
        others = [
            task_id
            for task_id in self.dag.task_ids
            if any(task_id.startswith(f"{name}.") for name in self.strategies if name != chosen)
        ]
        self.log.info(
            "this release runs %s; skipping %d task(s) of the other strategies", chosen, len(others)
        )
        context["ti"].xcom_push(key="strategy", value=chosen)
        if others:
            raise DownstreamTasksSkipped(tasks=others)
        return chosen

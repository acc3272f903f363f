"""The plan of a runbook run: what it would do for the alert, and which steps need a person."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

from opsdag.spec.runbook import RunbookSpec


class RunbookPlanOperator(BaseOperator):
    """Push the runbook's plan (``RunbookSpec.plan``); changes nothing.

    :param runbook: the runbook's spec.
    """

    def __init__(self, *, runbook: RunbookSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runbook = runbook

    def execute(self, context: Any) -> list[dict[str, Any]]:
        return self.runbook.plan(dry_run=bool(context["params"]["dry_run"]))

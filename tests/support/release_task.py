"""What a release's operators ask of their task instance, for tests that run them outside Airflow.

The validated request (``validate_request``'s XCom), the XComs the operators push and pull
back (kept in ``pushed``), and no failed task in the run (``get_ti_count``): the same calls
a task makes under Airflow, without a scheduler.
"""

from __future__ import annotations

from typing import Any


class ReleaseTaskInstance:
    dag_id, run_id, task_id = "release__checkout", "manual__test", "release"

    def __init__(self, request: dict[str, Any]) -> None:
        self.request = request
        self.pushed: dict[str, Any] = {}

    def xcom_pull(self, task_ids: str | None = None, key: str | None = None) -> Any:
        return self.request if task_ids == "validate_request" else self.pushed.get(key or "")

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value

    def get_ti_count(self, **_: Any) -> int:
        return 0  # no task of the run has failed

    def context(self) -> dict[str, Any]:
        """The operator's ``context`` with this task instance."""
        return {"ti": self, "params": {}}

"""The first task of a release: the request is checked, whole, before anything changes."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from opsdag.operators.run_state import RecordsItsError
from opsdag.spec.request import RequestRefused, validate_request
from opsdag.spec.service import ServiceSpec


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

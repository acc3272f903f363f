"""The first task of a release: the request is checked, whole, and resolved once, before anything changes."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from opsdag.operators.run_state import RecordsItsError
from opsdag.spec.request import RequestRefused, validate_request
from opsdag.spec.service import ServiceSpec
from opsdag.strategies.choice import StrategyRefused, choose_strategy_for


class ValidateRequestOperator(RecordsItsError, BaseOperator):
    """Refuse a bad run conf before anything changes, and resolve what the release will run.

    The Params form checks each field; this checks the conf as one object, for runs created
    any other way (unknown keys, another repository's image), then resolves it once:

    - the strategy: the run's, else the service's default, refused (``strategy: ...``) when
      the service cannot do it (no section for it in its spec, a router that cannot);
    - the image: as the platform will run it; one that cannot be pulled (an undeclared tag)
      is refused here, in a dry run too, rather than planned. With ``build`` the image is
      the version to build (``repo:<version>``): the ``build`` task resolves what it pushed.

    One actor per service: while a runbook acting on the service runs (DagRun counts through
    the Task SDK, :mod:`opsdag.runbooks.actors`), the release is refused (``service: ...``);
    a dry run changes nothing and is not refused for it.

    A refusal fails the task without retry and is recorded as its error (``field: problem``
    lines), so the report and the run's note say what was wrong. Returns the resolved
    request (a dict): every later task reads its ``image`` and ``strategy``.

    :param service: the service's spec.
    """

    ui_color = "#eeeeee"

    def __init__(self, *, service: ServiceSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service = service

    def run(self, context: Any) -> dict[str, Any]:
        from opsdag.platforms.registry import NoDriver, driver_for

        conf = {**dict(context["params"]), **dict(context["dag_run"].conf or {})}
        try:
            request = validate_request(conf, self.service)
            strategy = choose_strategy_for(request.strategy, self.service)
            driver = driver_for(self.service)
        except RequestRefused as exc:
            raise AirflowFailException(str(exc)) from None
        except (StrategyRefused, NoDriver) as exc:
            raise AirflowFailException(f"release request refused:\n{exc}") from None
        if not request.dry_run:
            self.refuse_beside_runbooks(context)
        result = {**request.model_dump(), "strategy": strategy}
        if request.build:  # the build task pushes it and resolves the digest it deploys
            self.log.info("release request of %s: %s (the image is built first)", self.service.name, result)
            return result
        resolved = driver.resolve_image(request.image)
        if not resolved.pullable:
            raise AirflowFailException(f"release request refused:\nimage: {resolved.reason}")
        result["image"] = resolved.reference
        if resolved.digest:
            result["digest"] = resolved.digest
        self.log.info("release request of %s: %s", self.service.name, result)
        return result

    def refuse_beside_runbooks(self, context: Any) -> None:
        from opsdag.paths import include_dir
        from opsdag.runbooks.actors import acting, conflict, known_runbooks, release_rivals

        ti = context["ti"]
        rivals = release_rivals(self.service.name, known_runbooks(include_dir()))
        active = acting(rivals, lambda dag_id, states: ti.get_dr_count(dag_id=dag_id, states=states))
        reason = conflict(self.service.name, active)
        if reason:
            raise AirflowFailException(
                f"release request refused:\nservice: {reason}; trigger the release again once it has ended"
            )

"""Undo a release: traffic back to the old version first, then the new version's instances out.

Runs when a step of the release failed (trigger rule one_failed). The strategy's own
undo (:mod:`opsdag.strategies.undo`) restores the rollback target preflight recorded, and
the result is checked against it exactly (image, instances, split); the task then fails
so that the run ends ``failed`` while its report shows what happened.
"""

from __future__ import annotations

import time
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from opsdag.analysis.preflight_checks import preflight_passed
from opsdag.analysis.rollout_state import restored_state_problems
from opsdag.operators.service_base import ServiceOperator
from opsdag.platforms.base import RollbackTarget
from opsdag.strategies.undo import UNDO


class RollbackOperator(ServiceOperator):
    """Restore the rollback target with the undo of the run's strategy, and prove it restored."""

    def run(self, context: Any) -> dict[str, Any]:
        preflight = context["ti"].xcom_pull(task_ids="preflight", key="preflight")
        if not preflight_passed(preflight):
            # Refused before any change: a new version now running belongs to someone else's release.
            raise AirflowSkipException("nothing to roll back: the release was refused before any change")
        target = RollbackTarget(**preflight["rollback_target"])
        strategy = self.request(context)["strategy"]
        started = time.time()
        UNDO[strategy](self.driver, self.router, target)
        status, split = self.driver.status(), self.router.verify_weight()
        finished = time.time()
        problems = restored_state_problems(status, split, target)
        result = {
            "performed": True,
            "strategy": strategy,
            "started_at": started,
            "finished_at": finished,
            "duration_s": round(finished - started, 3),
            "target": target.to_dict(),
            "stable_image": status.stable.image if status.stable else None,
            "stable_instances": status.stable.instances if status.stable else 0,
            "split": split.to_dict(),
            "problems": problems,
        }
        context["ti"].xcom_push(key="rollback", value=result)
        if problems:
            raise AirflowFailException("rollback incomplete: " + "; ".join(problems))
        self.log.info(
            "rolled back (%s) in %.2f s: %s serves 100 %% on %d instance(s)",
            strategy,
            result["duration_s"],
            target.image,
            target.instances,
        )
        return result

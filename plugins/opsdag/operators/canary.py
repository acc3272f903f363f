"""Operators that move a canary: deploy it, set its traffic weight, promote it, roll it back."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from opsdag.analysis.preflight import preflight_passed
from opsdag.operators.service_base import ServiceOperator
from opsdag.triggers.rollout import RolloutStatusTrigger


class DeployCanaryOperator(ServiceOperator):
    """Start the canary at 0 % traffic and wait, deferred, until it is ready.

    A canary that crashes or whose image cannot be pulled fails this task for good (no
    retry), which sends the release down its rollback branch before any traffic reaches it.
    Retrying keeps the canary already running the same image.

    :param image: image reference of the new version.
    :param ready_timeout: how long the canary may take to become ready.
    """

    template_fields = ("image",)

    def __init__(self, *, image: str, ready_timeout: timedelta = timedelta(minutes=5), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.image = image
        self.ready_timeout = ready_timeout

    def run(self, context: Any) -> None:
        self.skip_if_dry_run(context, f"deploy canary {self.image} at 0 %")
        self.platform.deploy_canary(self.image)
        context["ti"].xcom_push(key="selectors", value=self.platform.metric_selectors())
        self.log.info("canary %s deployed at 0 %%; waiting until ready", self.image)
        self.defer(
            trigger=RolloutStatusTrigger(
                service=self.service.model_dump(mode="json"),
                image=self.image,
                timeout_at=time.time() + self.ready_timeout.total_seconds(),
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        context["ti"].xcom_push(key="readiness", value=event)
        if event["status"] != "ready":
            raise AirflowFailException(f"canary {self.image} {event['status']}: {event['reason']}")
        self.log.info("canary %s ready", self.image)
        return event


class SetCanaryWeightOperator(ServiceOperator):
    """Send ``weight`` % of the traffic to the canary (idempotent)."""

    def __init__(self, *, weight: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weight = weight

    def run(self, context: Any) -> int:
        self.skip_if_release_failed(context)
        self.skip_if_dry_run(context, f"send {self.weight} % of traffic to the canary")
        self.platform.set_canary_weight(self.weight)
        self.log.info("canary weight set to %d %%", self.weight)
        return self.weight


class PromoteCanaryOperator(ServiceOperator):
    """Make the canary's version the stable one at 100 %."""

    def run(self, context: Any) -> dict[str, Any]:
        self.skip_if_release_failed(context)
        self.skip_if_dry_run(context, "promote the canary to stable")
        self.platform.promote()
        status = self.platform.status()
        self.log.info("promoted: stable is now %s", status.stable_image)
        return status.to_dict()


class RollbackCanaryOperator(ServiceOperator):
    """Take all traffic off the canary at once, remove it, and check that stable serves.

    Runs when a stage failed; fails itself at the end so the release run ends ``failed``
    while its report still shows what happened.
    """

    def run(self, context: Any) -> dict[str, Any]:
        if not preflight_passed(context["ti"].xcom_pull(task_ids="preflight", key="preflight")):
            # Refused before any change: a canary now running belongs to someone else's release.
            raise AirflowSkipException("nothing to roll back: the release was refused before any change")
        started = time.time()
        self.platform.rollback()
        status = self.platform.status()
        result = {
            "performed": True,
            "started_at": started,
            "finished_at": time.time(),
            "duration_s": round(time.time() - started, 3),
            "stable_image": status.stable_image,
            "stable_healthy": status.stable_healthy,
            "canary_weight": status.canary_weight,
        }
        context["ti"].xcom_push(key="rollback", value=result)
        self.log.info(
            "rolled back in %.2f s: stable %s serves 100 %% (healthy=%s)",
            result["duration_s"],
            status.stable_image,
            status.stable_healthy,
        )
        if not status.stable_healthy or status.canary_image is not None:
            raise AirflowFailException(f"rollback incomplete: {status.to_dict()}")
        return result


class PostPromotionCheckOperator(ServiceOperator):
    """After promotion the new version must be the stable one, healthy, at 100 %."""

    template_fields = ("image",)

    def __init__(self, *, image: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.image = image

    def run(self, context: Any) -> dict[str, Any]:
        status = self.platform.status()
        ok = status.stable_image == self.image and status.stable_healthy and status.canary_image is None
        detail = (
            f"stable {status.stable_image}, healthy={status.stable_healthy}, canary {status.canary_image}"
        )
        result = {"ok": ok, "detail": detail}
        context["ti"].xcom_push(key="post_promotion", value=result)
        if not ok:
            raise AirflowFailException(f"post-promotion check failed: {detail}")
        return result

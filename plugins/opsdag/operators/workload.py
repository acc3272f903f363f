"""Operators that change a service's instances through its workload driver.

Start the new version (no traffic) and wait for it, deferred; replace a rolling batch;
wait out blue-green's scale-down delay; promote (the stable rollout waited for, deferred);
check the promoted state. Each is idempotent: a retry finds the instances it started and
keeps them.

A driver that rolls in place (``WorkloadDriver.rolls_in_place``: Kubernetes rolls the
Deployment itself) runs a rolling release with ``roll`` instead of a canary track: the
first batch is the ``deploy`` step, each batch holds where the plan says, and the new
version's share is the ratio of its ready instances (``replica_split``), which no router
can change, so the router is not asked for a weight.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from opsdag.operators.service_base import ServiceOperator
from opsdag.platforms.base import PlatformError, TrafficSplit, WorkloadStatus
from opsdag.triggers.rollout import RolloutStatusTrigger
from opsdag.triggers.traffic_abort import abort_request

READY_TIMEOUT = timedelta(minutes=5)
PROMOTE_WAIT = timedelta(minutes=30)  # a backstop: the platform's promote timeout comes first


class StartVersionOperator(ServiceOperator):
    """Start ``instances`` of the new version beside the stable one, taking no traffic, and wait
    (deferred) until they are ready.

    A version that crashes or cannot be pulled fails this task for good (no retry): the
    release rolls back before any traffic reaches it. Once the new instances are ready, pushes
    the metric ``selectors``: read then, they name the instances that run now, not ones an
    earlier release left in a query's rate window.

    Behind a router whose split follows replica counts (``exact_split`` false: a replica
    ratio), every ready instance takes a share at once, so a canary starts with 1 instance
    and each stage's weight scales it.

    :param image: the resolved image reference.
    :param instances: how many instances to start (None: as many as the stable version runs).
    """

    template_fields = ("image",)

    def __init__(
        self, *, image: str, instances: int | None, ready_timeout: timedelta = READY_TIMEOUT, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.image = image
        self.instances = instances
        self.ready_timeout = ready_timeout

    def run(self, context: Any) -> None:
        in_place = rolls_in_place(self)
        if self.strategy == "canary" and not self.router.exact_split:
            count = 1  # it takes its replica share as soon as it is ready
        else:
            count = self.instances or self._stable_instances()
        would = f"roll {count} instance(s) to {self.image}" if in_place else f"start {count} at 0 %"
        self.skip_unless_moving(context, would)
        started = time.time()
        if in_place:
            self.driver.roll(self.image, count, self.service.instances())
        else:
            self.driver.start(self.image, count)
        self.log.info(
            "%s: %d instance(s) %s; waiting until ready",
            self.image,
            count,
            "rolled in place (they take their replica share once ready)" if in_place else "started at 0 %",
        )
        self.defer(
            trigger=RolloutStatusTrigger(
                service=self.service.model_dump(mode="json"),
                image=self.image,
                timeout_at=time.time() + self.ready_timeout.total_seconds(),
                **({"updated": count, "started_at": started} if in_place else {}),
            ),
            method_name="execute_complete",
        )

    def _stable_instances(self) -> int:
        stable = self.driver.status().stable
        return stable.instances if stable else 1

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        context["ti"].xcom_push(key="readiness", value=event)
        if event["status"] != "ready":
            raise AirflowFailException(f"{self.image} {event['status']}: {event['reason']}")
        context["ti"].xcom_push(key="selectors", value=self.driver.metric_selectors())
        self.log.info("%s ready: %s", self.image, event.get("reason"))
        return event


class ReplaceBatchOperator(ServiceOperator):
    """One rolling batch: the new version up to ``canary`` instances (ready), the old down to
    ``stable``, and the traffic split to match.

    The new instances wait (deferred) for readiness before the old ones go; if they fail,
    the trigger takes traffic off the new version before this task fails.

    :param image: the resolved image reference.
    :param canary: instances of the new version after this batch.
    :param stable: instances of the old version after this batch (at least 1).
    :param weight: the new version's share of the traffic after this batch, in percent.
    """

    template_fields = ("image",)

    def __init__(
        self,
        *,
        image: str,
        canary: int,
        stable: int,
        weight: int,
        ready_timeout: timedelta = READY_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.image = image
        self.canary = canary
        self.stable = stable
        self.weight = weight
        self.ready_timeout = ready_timeout

    def run(self, context: Any) -> None:
        self.skip_unless_moving(
            context, f"run {self.canary} new and {self.stable} old instance(s), {self.weight} % to the new"
        )
        if rolls_in_place(self):
            # No abort: the Service selects old and new pods alike, no router can take traffic
            # off the new ones; a failed batch is undone by the rollback task (undo_roll).
            started = time.time()
            self.driver.roll(self.image, self.canary, self.service.instances())
            self.defer(
                trigger=RolloutStatusTrigger(
                    service=self.service.model_dump(mode="json"),
                    image=self.image,
                    timeout_at=time.time() + self.ready_timeout.total_seconds(),
                    updated=self.canary,
                    started_at=started,
                ),
                method_name="execute_complete",
            )
        self.driver.start(self.image, self.canary)
        self.defer(
            trigger=RolloutStatusTrigger(
                service=self.service.model_dump(mode="json"),
                image=self.image,
                timeout_at=time.time() + self.ready_timeout.total_seconds(),
                abort=abort_request(self.service, "weight_zero"),
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        if event["status"] != "ready":
            context["ti"].xcom_push(key="readiness", value=event)
            raise AirflowFailException(f"{self.image} {event['status']}: {event['reason']}")
        if rolls_in_place(self):
            status = self.driver.status()
            split = replica_split(status, self.weight)
            context["ti"].xcom_push(key="instances", value=status.to_dict())
        else:
            self.driver.scale("stable", self.stable)
            self.router.set_weight(self.weight)
            split = self.router.verify_weight()
        result = {
            "canary": self.canary,
            "stable": self.stable,
            "weight": self.weight,
            "split": split.to_dict(),
        }
        self.log.info("batch done: %s", result)
        return result


class ScaleDownDelayOperator(ServiceOperator):
    """Blue-green: keep the old colour up (idle) for ``delay`` after the switch, deferred.

    While it waits, a switch back is one router call. Safe to retry: the delay counts
    from the first try's start (kept in XCom).
    """

    def __init__(self, *, delay: timedelta, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delay = delay

    def run(self, context: Any) -> None:
        from airflow.providers.standard.triggers.temporal import DateTimeTrigger

        self.skip_unless_moving(context, f"keep the old colour up for {self.delay}")
        ti = context["ti"]
        since = ti.xcom_pull(task_ids=self.task_id, key="since") or time.time()
        ti.xcom_push(key="since", value=since)
        until = datetime.fromtimestamp(since, UTC) + self.delay
        self.log.info("old colour stays up until %s", until.isoformat(timespec="seconds"))
        self.defer(trigger=DateTimeTrigger(moment=until), method_name="execute_complete")

    def execute_complete(self, context: Any, event: Any = None) -> None:
        self.log.info("scale-down delay over")


class PromoteOperator(ServiceOperator):
    """Make the new version the stable one and remove the old one's instances.

    Where the platform rolls its stable instances to the new version (Kubernetes), the task
    starts that rollout and waits for it deferred; then it finishes the promotion, or puts
    back what served and fails for good. A retry finds the promotion on the platform: one
    under way is waited for again, a complete one leaves nothing to do.

    :param wait_timeout: the trigger's own deadline, a backstop: the driver fails a rollout
        past its platform's promote timeout first.
    """

    def __init__(self, *, wait_timeout: timedelta = PROMOTE_WAIT, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.wait_timeout = wait_timeout

    def run(self, context: Any) -> dict[str, Any]:
        self.skip_unless_moving(context, "promote the new version to stable")
        status = self.driver.status()
        new = status.canary or status.stable
        rolling = self.driver.promote_start()
        if rolling is not None:
            self.log.info("promoting: %s; waiting (deferred) until it is done", rolling)
            self.defer(
                trigger=RolloutStatusTrigger(
                    service=self.service.model_dump(mode="json"),
                    image=new.image if new else "the new version",
                    timeout_at=time.time() + self.wait_timeout.total_seconds(),
                    promotion=True,
                ),
                method_name="execute_complete",
            )
        return self._promoted()

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        context["ti"].xcom_push(key="promotion", value=event)
        if event["status"] != "ready":
            try:
                self.driver.promote_revert(event["reason"])
            except PlatformError as error:
                raise AirflowFailException(str(error)) from None
            raise AirflowFailException(f"promotion {event['status']}: {event['reason']}")
        self.driver.promote_finish()
        return self._promoted()

    def _promoted(self) -> dict[str, Any]:
        status = self.driver.status()
        self.log.info("promoted: stable is now %s", status.stable.image if status.stable else None)
        return status.to_dict()


class PostPromotionCheckOperator(ServiceOperator):
    """After promotion the new version must be the only one, healthy, with all the traffic, and
    answer the service's smoke checks."""

    template_fields = ("image",)

    def __init__(self, *, image: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.image = image

    def run(self, context: Any) -> dict[str, Any]:
        from opsdag.analysis.rollout_state import promoted_state_problems
        from opsdag.analysis.smoke_checks import smoke_problems
        from opsdag.operators.smoke import smoke_test

        status = self.driver.status()
        split = self.router.verify_weight()
        problems = promoted_state_problems(status, split, self.image)
        if not problems and self.service.smoke:
            checks = list(self.service.smoke)
            problems = smoke_problems(checks, smoke_test(checks, self.driver.endpoints("stable")))
        detail = "; ".join(problems) or f"{self.image} serves 100 % on {status.stable.instances} instance(s)"
        result = {"ok": not problems, "detail": detail}
        context["ti"].xcom_push(key="post_promotion", value=result)
        if problems:
            raise AirflowFailException(f"post-promotion check failed: {detail}")
        return result


def rolls_in_place(operator: ServiceOperator) -> bool:
    """Whether this step of a rolling release rolls the serving instances in place."""
    return operator.strategy == "rolling" and operator.driver.rolls_in_place


def replica_split(status: WorkloadStatus, requested: int) -> TrafficSplit:
    """The split in force when one entry point sends to every ready instance of both tracks alike."""
    canary = status.canary.ready_instances if status.canary else 0
    stable = status.stable.ready_instances if status.stable else 0
    if canary + stable == 0:
        return TrafficSplit(0.0, 0.0, exact=False, requested=requested)
    share = round(100 * canary / (canary + stable), 1)
    return TrafficSplit(round(100 - share, 1), share, exact=abs(share - requested) < 0.5, requested=requested)

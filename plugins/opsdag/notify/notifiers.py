"""Tell people about a release on Slack: it started, each stage's verdict, the outcome.

The two notifiers are task callbacks the release DAG attaches (``ReleaseStartedNotifier``
on ``validate_request``'s success, ``StageVerdictNotifier`` on each gate's end); the
``notify_*`` functions build a message (:mod:`opsdag.notify.release_messages`) and post it
through :func:`opsdag.notify.slack.send_slack`, which logs and returns False on any
failure: a release never fails, nor changes its outcome, because Slack did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseNotifier

from opsdag.notify.release_messages import release_outcome, release_started, stage_verdict
from opsdag.notify.slack import send_slack
from opsdag.reports.release_record import ReleaseRecord, StageRecord
from opsdag.spec.service import ServiceSpec

# Where to send: an Airflow connection id, or a service spec whose notifications.slack
# gives the connection and the channel (None, or a spec without Slack: not sent).
SlackTarget = str | ServiceSpec | None


def slack_target(
    target: SlackTarget, channel: str | None = None
) -> tuple[str | None, str | None, str | None]:
    """``(conn_id, channel, service name)`` of a connection id or a service spec."""
    if target is None or isinstance(target, str):
        return target, channel, None
    slack = target.notifications.slack
    if slack is None:
        return None, channel, target.name
    return slack.connection_id, channel or slack.channel, target.name


def planned_stages(service: ServiceSpec, strategy: str | None = None) -> list[StageRecord]:
    """The stages a release of ``service`` with ``strategy`` will go through, none run yet."""
    from opsdag.strategies.stages import stage_plans

    plans = stage_plans(service, strategy or service.strategy)
    return [StageRecord(name=p.name, weight=p.weight, bake_s=p.bake.total_seconds()) for p in plans]


def notify_release_started(
    target: SlackTarget,
    *,
    image: str,
    strategy: str,
    service_name: str | None = None,
    previous_image: str | None = None,
    stages: Sequence[StageRecord | Mapping[str, Any]] = (),
    reason: str = "",
    dry_run: bool = False,
    build: str | None = None,
    channel: str | None = None,
    dag_id: str | None = None,
    run_id: str | None = None,
    run_url: str | None = None,
) -> bool:
    """Post :func:`~opsdag.notify.release_messages.release_started`; True when Slack took it.

    ``target`` is a connection id or a service spec; ``service_name`` defaults to the spec's name.
    """
    conn_id, channel, name = slack_target(target, channel)
    text, blocks = release_started(
        service_name=service_name or name or "?",
        image=image,
        strategy=strategy,
        previous_image=previous_image,
        stages=stages,
        reason=reason,
        dry_run=dry_run,
        build=build,
        dag_id=dag_id,
        run_id=run_id,
        run_url=run_url,
    )
    return send_slack(conn_id, text, blocks=blocks, channel=channel)


def notify_stage_verdict(
    target: SlackTarget,
    stage: StageRecord | Mapping[str, Any],
    *,
    service_name: str | None = None,
    image: str | None = None,
    channel: str | None = None,
    dag_id: str | None = None,
    run_id: str | None = None,
    run_url: str | None = None,
) -> bool:
    """Post :func:`~opsdag.notify.release_messages.stage_verdict` (``stage`` may be a gate's
    ``verdict`` XCom); True when Slack took it."""
    conn_id, channel, name = slack_target(target, channel)
    text, blocks = stage_verdict(
        service_name=service_name or name or "?",
        image=image,
        stage=stage,
        dag_id=dag_id,
        run_id=run_id,
        run_url=run_url,
    )
    return send_slack(conn_id, text, blocks=blocks, channel=channel)


def notify_release_outcome(
    target: SlackTarget,
    record: ReleaseRecord | Mapping[str, Any],
    *,
    channel: str | None = None,
    report_url: str | None = None,
    run_url: str | None = None,
) -> bool:
    """Post :func:`~opsdag.notify.release_messages.release_outcome`; True if Slack took it."""
    conn_id, channel, _ = slack_target(target, channel)
    text, blocks = release_outcome(record, report_url=report_url, run_url=run_url)
    return send_slack(conn_id, text, blocks=blocks, channel=channel)


class ReleaseStartedNotifier(BaseNotifier):
    """Success callback of ``validate_request``: posts "release started" with the validated request.

    The request is the task's return value (image, strategy, reason, dry_run, build); a
    strategy of None is the service's default. Never raises.

    :param service: the service being released (its Slack settings and canary stages).
    """

    def __init__(self, *, service: ServiceSpec) -> None:
        super().__init__()
        self.service = service

    def notify(self, context: Any) -> None:
        try:
            self._notify(context)
        except Exception as exc:  # a message that cannot be made or sent never fails the release
            self.log.warning("release-started message not sent: %s: %s", type(exc).__name__, exc)

    def _notify(self, context: Any) -> None:
        if self.service.notifications.slack is None:
            return
        request = context["ti"].xcom_pull(task_ids="validate_request") or {}
        if not request.get("image"):
            return
        notify_release_started(
            self.service,
            image=request["image"],
            strategy=request.get("strategy") or self.service.strategy,
            reason=request.get("reason") or "",
            dry_run=bool(request.get("dry_run")),
            build=self.build_source() if request.get("build") else None,
            stages=planned_stages(self.service, request.get("strategy")),
            dag_id=getattr(context.get("dag"), "dag_id", None),
            run_id=context.get("run_id"),
        )

    def build_source(self) -> str | None:
        build = self.service.image.build
        return f"{build.context} ({build.builder} builder)" if build else None


class StageVerdictNotifier(BaseNotifier):
    """Task callback of a health gate: posts the gate's verdict (its ``verdict`` XCom) to Slack.

    Never raises: a notification that cannot be sent is logged and the release goes on.

    :param service: the service whose Slack settings to use.
    """

    def __init__(self, *, service: ServiceSpec) -> None:
        super().__init__()
        self.service = service

    def notify(self, context: Any) -> None:
        try:
            self._notify(context)
        except Exception as exc:  # a message that cannot be made or sent never fails the release
            self.log.warning("stage verdict message not sent: %s: %s", type(exc).__name__, exc)

    def _notify(self, context: Any) -> None:
        if self.service.notifications.slack is None:
            return
        verdict = context["ti"].xcom_pull(task_ids=context["ti"].task_id, key="verdict")
        if not verdict:
            return
        notify_stage_verdict(self.service, verdict, run_id=context.get("run_id"))

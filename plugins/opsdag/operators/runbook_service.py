"""The runbook steps on a service through its platform: roll back its last release, restart, scale,
drain its canary; its diagnostics (``service_status``) and ``metric_snapshot``; and the
``health_gate`` verify step (the release metrics judged on the stable track).

The four mitigations are destructive: they plan only in a dry run and act only once
approved (when the guards ask). Before any change each checks that it is the only actor on the service
(:mod:`opsdag.runbooks.actors`, DagRun counts through the Task SDK): a release of the
service queued or running, or another runbook acting on it, stops the runbook there,
unchanged, and the ``escalate`` step after it calls people. The platform is reached
through the registry's driver and router, as a release does; the service's spec is read
at run time (never at DAG parse).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from opsdag.format import duration
from opsdag.operators.runbook_steps import RunbookStepOperator, StepFailed, StopRunbook
from opsdag.runbooks.engine import Decision, approval_decision

_POLL_S = 0.5


def other_actors(context: Any, service: str, runbook: str) -> tuple[dict[str, int], str | None]:
    """Who else acts on ``service`` now (DagRun counts through the Task SDK), and the refusal in words."""
    from opsdag.paths import include_dir
    from opsdag.runbooks.actors import acting, conflict, known_runbooks, runbook_rivals

    ti = context["ti"]
    rivals = runbook_rivals(service, runbook, known_runbooks(include_dir()))
    active = acting(rivals, lambda dag_id, states: ti.get_dr_count(dag_id=dag_id, states=states))
    return active, conflict(service, active)


class _ServiceStepOperator(RunbookStepOperator):
    """A step on ``step.service`` (the destructive ones call ``may_act`` first).

    :param approval_task_id: the approval task before this one (None: no approval asked).
    """

    def __init__(self, *, approval_task_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.approval_task_id = approval_task_id

    def may_act(self, context: Any) -> tuple[Decision, dict[str, Any]]:
        """Act, plan or skip, in this order: an alert about another service stops the runbook; another
        actor on the service stops it, to be escalated; then the dry run and the approval decide."""
        service = ((context["params"].get("alert") or {}).get("labels") or {}).get("service")
        if service and service != self.step.service:
            raise StopRunbook(
                f"the alert is about {service!r}; this runbook acts on {self.step.service!r}: nothing done"
            )
        self.refuse_beside_other_actors(context)
        answer = context["ti"].xcom_pull(task_ids=self.approval_task_id) if self.approval_task_id else None
        needs = self.approval_task_id is not None
        decision = approval_decision(dry_run=self.dry_run(context), needs_approval=needs, answer=answer)
        return decision, {"needs_approval": needs, "approved_by": decision.approved_by}

    def refuse_beside_other_actors(self, context: Any) -> None:
        """Stop the runbook, unchanged, while a release or another runbook acts on the service."""
        active, reason = other_actors(context, self.step.service, self.runbook.name)
        if reason:
            raise StopRunbook(f"refused, nothing changed: {reason}", escalate=True, data={"actors": active})

    def service_spec(self) -> Any:
        """The service's spec (include/services/<service>.yaml), read at run time."""
        from opsdag.paths import include_dir
        from opsdag.spec.loader import load_kind

        spec = load_kind(include_dir(), "services").specs.get(self.step.service)
        if spec is None:
            raise StepFailed(
                f"no valid spec of service {self.step.service!r} in {include_dir() / 'services'}"
            )
        return spec

    def platform(self) -> tuple[Any, Any]:
        """The service's workload driver and traffic router, from its spec (include/services)."""
        from opsdag.platforms.registry import driver_for, router_for

        spec = self.service_spec()
        return driver_for(spec), router_for(spec)


class RollbackReleaseOperator(_ServiceStepOperator):
    """``rollback_release``: the last release, if younger than ``max_age``, is undone on the platform.

    Its ``previous_image`` starts on the canary track (as many instances as serve now),
    becomes ready, takes all the traffic (``router.switch``) and is promoted; the platform
    is then read back until the previous version serves 100 % on healthy instances.
    """

    def perform(self, context: Any, started: datetime) -> tuple[Any, ...]:
        from opsdag.analysis.rollout_state import promoted_state_problems
        from opsdag.paths import reports_root
        from opsdag.platforms.base import CANARY
        from opsdag.runbooks.actors import release_dag_id
        from opsdag.runbooks.last_release import last_promoted, read_release_reports, rollback_choice

        step = self.step
        decision, approval = self.may_act(context)
        if decision.mode == "skip":
            return "skipped", decision.reason, {}, approval
        driver, router = self.platform()
        status = driver.status()
        stable_image = status.stable.image if status.stable else None
        release = last_promoted(read_release_reports(reports_root() / release_dag_id(step.service)))
        choice = rollback_choice(release, now=started, max_age=step.max_age, stable_image=stable_image)
        data: dict[str, Any] = {
            "last_release": release.to_dict() if release else None,
            "stable_before": stable_image,
        }
        if choice.release is None:
            raise StopRunbook(choice.reason, escalate=True, data=data)
        target = choice.release.previous_image
        if decision.mode == "plan":
            return "planned", f"dry run: would roll back: {choice.reason}", data, approval
        resolved = driver.resolve_image(target)
        if not resolved.pullable:
            raise StepFailed(f"cannot roll back to {target}: {resolved.reason}")
        instances = status.stable.instances if status.stable else 1
        t0 = time.monotonic()
        driver.start(target, instances)
        deadline = t0 + step.ready_timeout.total_seconds()
        while not (readiness := driver.readiness()).ready:
            if readiness.failed or time.monotonic() > deadline:
                driver.remove(CANARY)
                why = readiness.reason if readiness.failed else f"not ready within {step.ready_timeout}"
                raise StepFailed(f"{target} did not become ready ({why}); {stable_image} still serves")
            time.sleep(_POLL_S)
        router.switch(CANARY)
        driver.promote()
        while problems := promoted_state_problems(driver.status(), router.verify_weight(), target):
            if time.monotonic() > deadline:
                raise StepFailed(f"rolled back to {target}, but: {'; '.join(problems)}")
            time.sleep(_POLL_S)
        took = round(time.monotonic() - t0, 2)
        data.update(rolled_back_to=target, instances=instances, duration_s=took)
        detail = (
            f"rolled back {stable_image} -> {target} on {instances} instance(s) in {took:g} s "
            f"({choice.reason}; {decision.reason})"
        )
        return "done", detail, data, approval


class RestartInstancesOperator(_ServiceStepOperator):
    """``restart_instances``: the stable instances that do not answer are restarted, then must answer."""

    def perform(self, context: Any, started: datetime) -> tuple[Any, ...]:
        step = self.step
        decision, approval = self.may_act(context)
        if decision.mode == "skip":
            return "skipped", decision.reason, {}, approval
        driver, _ = self.platform()
        before = driver.status().stable
        data: dict[str, Any] = {"before": before.to_dict() if before else None}
        if decision.mode == "plan":
            down = before.instances - before.ready_instances if before else 0
            total = before.instances if before else 0
            return (
                "planned",
                f"dry run: would restart the {down} of {total} instance(s) not ready",
                data,
                approval,
            )
        t0 = time.monotonic()
        restarted = driver.restart(step.track)
        deadline = t0 + step.timeout.total_seconds()
        while not ((now_ := driver.status().stable) and now_.healthy):
            if time.monotonic() > deadline:
                ready = f"{now_.ready_instances} of {now_.instances}" if now_ else "none"
                raise StepFailed(
                    f"restarted {len(restarted)}, but after {step.timeout} {ready} instance(s) are ready"
                )
            time.sleep(_POLL_S)
        took = round(time.monotonic() - t0, 2)
        data.update(restarted=restarted, duration_s=took, after=now_.to_dict())
        if not restarted:
            return (
                "done",
                f"every {step.track} instance answers ({now_.instances}): nothing restarted",
                data,
                approval,
            )
        detail = (
            f"restarted {len(restarted)} of {now_.instances} instance(s), all ready in {took:g} s: "
            f"{'; '.join(restarted)} ({decision.reason})"
        )
        return "done", detail, data, approval


class ScaleServiceOperator(_ServiceStepOperator):
    """``scale``: the stable track to ``replicas`` instances (``WorkloadDriver.scale``), then all ready."""

    def perform(self, context: Any, started: datetime) -> tuple[Any, ...]:
        from opsdag.platforms.base import STABLE

        step = self.step
        decision, approval = self.may_act(context)
        if decision.mode == "skip":
            return "skipped", decision.reason, {}, approval
        driver, _ = self.platform()
        before = driver.status().stable
        if before is None:
            raise StepFailed(f"{step.service} runs no stable version to scale")
        data: dict[str, Any] = {"before": before.to_dict()}
        change = f"{before.image} from {before.instances} to {step.replicas} instance(s)"
        if decision.mode == "plan":
            return "planned", f"dry run: would scale {change}", data, approval
        t0 = time.monotonic()
        driver.scale(STABLE, step.replicas)
        deadline = t0 + step.timeout.total_seconds()
        while not ((now_ := driver.status().stable) and now_.instances == step.replicas and now_.healthy):
            if time.monotonic() > deadline:
                ready = f"{now_.ready_instances} of {now_.instances}" if now_ else "none"
                raise StepFailed(f"scaled {change}, but after {step.timeout} {ready} instance(s) are ready")
            time.sleep(_POLL_S)
        took = round(time.monotonic() - t0, 2)
        data.update(after=now_.to_dict(), duration_s=took)
        return "done", f"scaled {change}, all ready in {took:g} s ({decision.reason})", data, approval


class DrainCanaryOperator(_ServiceStepOperator):
    """``drain_canary``: the canary's weight to 0 then the canary removed, read back drained.

    A release of the service queued or running holds its canary: the one-actor guard
    refuses the step then (unchanged, escalated), as for every mitigation.
    """

    def perform(self, context: Any, started: datetime) -> tuple[Any, ...]:
        from opsdag.runbooks.drain import DrainFailed, drain, drain_plan

        step = self.step
        decision, approval = self.may_act(context)
        if decision.mode == "skip":
            return "skipped", decision.reason, {}, approval
        driver, router = self.platform()
        status, split = driver.status(), router.verify_weight()
        plan = drain_plan(status, split)
        data: dict[str, Any] = {"before": {"status": status.to_dict(), "split": split.to_dict()}}
        if not plan.needed:
            return "done", plan.describe(), data, approval
        if decision.mode == "plan":
            return "planned", f"dry run: would {plan.describe()}", data, approval
        try:
            done = drain(driver, router, timeout_s=step.timeout.total_seconds(), poll_s=_POLL_S)
        except DrainFailed as exc:
            raise StepFailed(str(exc)) from None
        data.update(
            after={"status": done.status.to_dict(), "split": done.split.to_dict()}, duration_s=done.duration_s
        )
        stable = done.status.stable
        detail = (
            f"drained in {done.duration_s:g} s: {plan.describe()}; stable {stable.image if stable else '?'} "
            f"takes {done.split.stable:g} % ({decision.reason})"
        )
        return "done", detail, data, approval


class HealthGateOperator(_ServiceStepOperator):
    """``health_gate``: rounds of the service's analysis metrics on stable until one passes whole.

    Waits in its worker slot (a round every ``interval``, up to ``timeout``), not deferred.
    Its verdict is the run's verification, as a ``check_metric`` verify's.
    """

    def selectors(self) -> dict[str, str]:
        from opsdag.platforms.registry import driver_for

        return driver_for(self.service_spec()).metric_selectors()

    def perform(self, context: Any, started: datetime) -> tuple[Any, ...]:
        from opsdag.hooks.prometheus import PrometheusHook, PrometheusQueryError
        from opsdag.runbooks.engine import now
        from opsdag.runbooks.health_gate import (
            GateMisconfigured,
            QueryFailed,
            gate_metrics,
            measure_round,
            round_verdict,
        )

        step = self.step
        analysis = self.service_spec().analysis
        try:
            chosen = gate_metrics(analysis.metrics, step.metrics)
        except GateMisconfigured as exc:
            raise StepFailed(f"{step.service}: {exc}") from None
        selectors = self.selectors()
        hook = PrometheusHook(analysis.prometheus_conn_id)

        def read(promql: str) -> float | None:
            try:
                return hook.query(promql)
            except PrometheusQueryError as exc:
                raise QueryFailed(str(exc)) from exc

        left_out = f" (left out: {', '.join(chosen.left_out)})" if chosen.left_out else ""
        deadline = time.monotonic() + step.timeout.total_seconds()
        rounds = 0
        while True:
            measurements = measure_round(chosen.judged, selectors, read)
            rounds += 1
            phase, reason = round_verdict(measurements)
            data: dict[str, Any] = {
                "measurements": [m.to_dict() for m in measurements],
                "rounds": rounds,
                "left_out": chosen.left_out,
            }
            if phase == "pass":
                data["verification"] = {
                    "recovered": True,
                    "at": now().isoformat(),
                    "detail": f"health gate on {step.service} stable: {reason}",
                }
                head = "dry run, already healthy" if self.dry_run(context) else "healthy"
                return "done", f"{head} after {rounds} round(s): {reason}{left_out}", data
            if phase == "error":
                raise StepFailed(f"the health gate cannot judge {step.service}: {reason}")
            if self.dry_run(context):
                wait = duration(step.timeout.total_seconds())
                return "planned", f"dry run: would wait up to {wait} for the gate; now {reason}", data
            if time.monotonic() + step.interval.total_seconds() > deadline:
                raise StepFailed(
                    f"not healthy within {duration(step.timeout.total_seconds())} ({rounds} round(s)): "
                    f"{reason}{left_out}"
                )
            time.sleep(step.interval.total_seconds())


class ServiceStatusOperator(_ServiceStepOperator):
    """``service_status``: the platform's tracks, the split in force, the last releases; changes nothing."""

    def perform(self, context: Any, started: datetime) -> tuple[Any, ...]:
        from opsdag.paths import reports_root
        from opsdag.runbooks.actors import release_dag_id
        from opsdag.runbooks.last_release import read_release_reports, recent_releases, releases_detail

        step = self.step
        driver, router = self.platform()
        status, split = driver.status(), router.verify_weight()
        reports = read_release_reports(reports_root() / release_dag_id(step.service))
        releases = recent_releases(reports, step.releases)
        tracks = []
        for name, track in (("stable", status.stable), ("canary", status.canary)):
            if track is None:
                tracks.append(f"no {name}")
                continue
            failed = f", failed: {track.failed}" if track.failed else ""
            tracks.append(f"{name} {track.image}: {track.ready_instances} of {track.instances} ready{failed}")
        detail = (
            f"{'; '.join(tracks)}; traffic {split.stable:g} % stable / {split.canary:g} % canary; "
            f"{releases_detail(releases, now=started)}"
        )
        data = {"status": status.to_dict(), "split": split.to_dict(), "releases": releases}
        if step.log_lines:
            from opsdag.platforms.base import STABLE, PlatformError

            try:
                data["logs"] = driver.logs(STABLE, step.log_lines)
                detail += f"; the last {step.log_lines} log lines of {len(data['logs'])} instance(s) recorded"
            except PlatformError as exc:  # diagnostics go on without them
                data["logs"] = {}
                detail += f"; no logs: {exc}"
        return "done", detail, data


class MetricSnapshotOperator(RunbookStepOperator):
    """``metric_snapshot``: each named query read once, for the record; no data is None, never 0."""

    def perform(self, context: Any, started: datetime) -> tuple[Any, ...]:
        from opsdag.hooks.prometheus import PrometheusHook

        figures = PrometheusHook(self.step.prometheus_conn_id).query_figures(self.step.queries)
        detail = ", ".join(f"{name} {'no data' if v is None else f'{v:g}'}" for name, v in figures.items())
        return "done", detail, {"figures": figures}

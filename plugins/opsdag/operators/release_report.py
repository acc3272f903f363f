"""Write the release report from what the run's tasks recorded, and tell people the outcome.

The report task always runs (trigger rule all_done). It changes nothing on the platform:
it gathers XComs into a release record, adds monitoring figures read from Prometheus,
writes ``<reports root>/<dag_id>/<run_id>.md|.json``, makes its summary the run's note
where the Airflow API is reachable, and sends the outcome to Slack.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from opsdag.operators.service_base import ServiceOperator, preflight_passed


class ReleaseReportOperator(ServiceOperator):
    """Gather the release record, write the report, set the run note, notify."""

    def execute(self, context: Any) -> dict[str, Any]:
        from opsdag import paths
        from opsdag.notify.release import notify_release_outcome
        from opsdag.reports.release import summary, write_report
        from opsdag.reports.release_record import ReleaseRecord
        from opsdag.reports.run_note import set_run_note

        record = ReleaseRecord.from_dict(self.gather(context))
        written = write_report(record, paths.reports_root())
        text = summary(record)
        self.log.info("release %s: %s", record.status, text)
        self.log.info("report written to %s and %s", written.markdown, written.json)
        set_run_note(context["dag"].dag_id, context["run_id"], text, log=self.log)
        notify_release_outcome(self.service, record)
        result = {
            "status": record.status,
            "text": text,
            "markdown": str(written.markdown),
            "json": str(written.json),
        }
        context["ti"].xcom_push(key="summary", value=result)
        return result

    def gather(self, context: Any) -> dict[str, Any]:
        """The release record as a dict, from the XComs of this run's tasks."""
        ti = context["ti"]
        params = context["params"]
        request = ti.xcom_pull(task_ids="validate_request") or {}
        preflight = ti.xcom_pull(task_ids="preflight", key="preflight") or {}
        deploy = ti.xcom_pull(task_ids="deploy_canary", key="readiness") or {}
        rollback = ti.xcom_pull(task_ids="rollback", key="rollback")
        post = ti.xcom_pull(task_ids="post_promotion_check", key="post_promotion")
        steps = self.service.canary.steps if self.service.canary else []
        states = self._task_states(ti, [f"stage_{step.weight}.gate" for step in steps])
        stages = [self._stage(ti, step, states) for step in steps]
        started = context["dag_run"].start_date or datetime.now(UTC)
        finished = datetime.now(UTC)
        status = self._status(params, request, preflight, deploy, stages, rollback, post)
        incidents = []
        if deploy.get("status") in ("failed", "timeout"):
            incidents.append(f"canary {deploy.get('status')}: {deploy.get('reason')}")
        failed_stage = next((s for s in stages if s["status"] == "failed"), None)
        if failed_stage:
            incidents.append(f"{failed_stage['name']} failed: {failed_stage['reason']}")
        return {
            "service": self.service.name,
            "dag_id": context["dag"].dag_id,
            "run_id": context["run_id"],
            "image": request.get("image") or params.get("image"),
            "previous_image": preflight.get("stable_image"),
            "strategy": request.get("strategy") or params.get("strategy") or self.service.strategy,
            "reason": request.get("reason") or params.get("reason") or "",
            "dry_run": bool(params.get("dry_run")),
            "status": status,
            "started_at": started.isoformat(),
            "finished_at": finished.isoformat(),
            "duration_s": round((finished - started).total_seconds(), 1),
            "preflight": {"checks": preflight.get("checks", [])},
            "stages": stages,
            "post_promotion": post or {"ok": None, "detail": "not run"},
            "monitoring": self._monitoring(started, finished),
            "rollback": self._rollback(rollback, failed_stage, deploy),
            "incidents": incidents,
            "next_actions": [],
        }

    @staticmethod
    def _status(params, request, preflight, deploy, stages, rollback, post) -> str:
        if params.get("dry_run") and request:
            return "planned"
        if not request or not preflight_passed(preflight):
            return "refused"
        if rollback and rollback.get("performed"):
            return "rolled_back"
        if post and post.get("ok"):
            return "promoted"
        return "failed"

    @staticmethod
    def _rollback(rollback: dict | None, failed_stage: dict | None, deploy: dict) -> dict | None:
        if not rollback:
            return None
        reason = failed_stage["reason"] if failed_stage else deploy.get("reason") or "a release step failed"
        iso = {k: datetime.fromtimestamp(rollback[k], UTC).isoformat() for k in ("started_at", "finished_at")}
        return {"performed": True, "reason": reason, **iso, "duration_s": rollback.get("duration_s")}

    @staticmethod
    def _task_states(ti: Any, task_ids: list[str]) -> dict[str, str | None]:
        try:
            states = ti.get_task_states(dag_id=ti.dag_id, task_ids=task_ids, run_ids=[ti.run_id])
        except Exception:
            return {}
        return dict(states.get(ti.run_id, {}))

    @staticmethod
    def _stage(ti: Any, step: Any, states: dict[str, str | None]) -> dict[str, Any]:
        name = f"stage_{step.weight}"
        verdict = ti.xcom_pull(task_ids=f"{name}.gate", key="verdict")
        base = {"name": name, "weight": step.weight, "bake_s": step.bake.total_seconds()}
        if not verdict:
            skipped = states.get(f"{name}.gate") == "skipped"
            reason = "skipped: an earlier step failed or the run was a dry run" if skipped else "not reached"
            return {**base, "status": "skipped" if skipped else "not_run", "reason": reason, "metrics": []}
        passed = verdict.get("phase") == "pass"
        return {
            **base,
            "status": "passed" if passed else "failed",
            "reason": verdict.get("reason", ""),
            "started_at": verdict.get("started_at"),
            "finished_at": verdict.get("decided_at"),
            "metrics": verdict.get("metrics", []),
        }

    def _monitoring(self, started: datetime, finished: datetime) -> dict[str, float | None]:
        """Figures of the serving (stable) version over the release window; ``None`` is "no data"."""
        from opsdag.analysis.query import render_query
        from opsdag.hooks.prometheus import PrometheusHook

        queries = self.service.analysis.monitoring.queries()
        if not queries:
            return {}
        window = f"{max(int((finished - started).total_seconds()), 15)}s"
        hook = PrometheusHook(self.service.analysis.prometheus_conn_id)
        selectors = self.platform.metric_selectors()
        figures: dict[str, float | None] = {}
        for name, query in queries.items():
            try:
                figures[name] = hook.query(render_query(query.replace("$window", window), selectors))
            except Exception as exc:  # a missing figure is reported as no data, never as 0
                self.log.warning("monitoring figure %s unavailable: %s", name, exc)
                figures[name] = None
        return figures

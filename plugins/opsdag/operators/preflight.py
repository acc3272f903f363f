"""Check that a release can start safely, and record exactly what to restore if it is undone."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from opsdag.analysis import preflight_checks as decide
from opsdag.operators.service_base import ServiceOperator
from opsdag.strategies.stages import peak_instances


class ReleasePreflightOperator(ServiceOperator):
    """The seeds' checklist: platform and router answer, stable healthy, no other release in flight,
    capacity for the new instances, Prometheus answers, dependencies healthy (the spec's PromQL
    checks), the database's newest verified backup young enough; and the rollback target recorded.

    Pushes ``{"stable_image", "rollback_target", "checks": [{"name", "ok", "detail"}]}`` and fails
    (without retry) when a check fails, before anything has changed. Changes nothing itself,
    so it also runs in a dry run: the plan says what would have been refused.
    """

    def run(self, context: Any) -> dict[str, Any]:
        request = self.request(context)
        image, strategy = request["image"], request["strategy"]
        checks: list[dict[str, Any]] = []
        status = target = None
        try:
            status = self.driver.status()
            split = self.router.verify_weight()
            target = self.driver.rollback_target()
            checks.append(
                decide.check("platform and router reachable", True, f"{split.canary:g} % to canary")
            )
        except Exception as exc:
            checks.append(decide.check("platform and router reachable", False, str(exc)))
        if status is not None:
            checks.append(decide.stable_check(status))
            checks.append(decide.in_flight_check(status, image))
            needed = peak_instances(self.service, strategy, status.stable.instances if status.stable else 0)
            checks.append(decide.capacity_check(status, needed))
        checks.append(self._prometheus_check())
        checks += self._dependency_checks()
        if self.service.preflight.backup is not None:
            checks.append(self._backup_check())
        checks.append(
            decide.check(
                "rollback target recorded",
                target is not None,
                f"{target.image} on {target.instances} instance(s), {target.canary_weight} % to canary"
                if target
                else "unknown: the platform did not answer",
            )
        )
        result = {
            "stable_image": status.stable.image if status and status.stable else None,
            "rollback_target": target.to_dict() if target else None,
            "checks": checks,
        }
        context["ti"].xcom_push(key="preflight", value=result)
        for c in checks:
            self.log.info("preflight: %s: %s (%s)", c["name"], "ok" if c["ok"] else "FAILED", c["detail"])
        failed = [c for c in checks if not c["ok"]]
        if failed:
            raise AirflowFailException(
                "release refused by preflight: " + "; ".join(f"{c['name']}: {c['detail']}" for c in failed)
            )
        return result

    def _prometheus_check(self) -> dict[str, Any]:
        from opsdag.hooks.prometheus import PrometheusHook

        conn_id = self.service.analysis.prometheus_conn_id
        try:
            PrometheusHook(prometheus_conn_id=conn_id).query("vector(1)")
        except Exception as exc:
            return decide.check("Prometheus reachable", False, f"{conn_id}: {exc}")
        return decide.check("Prometheus reachable", True, f"{conn_id} answers queries")

    def _dependency_checks(self) -> list[dict[str, Any]]:
        from opsdag.hooks.prometheus import PrometheusHook

        hook = PrometheusHook(prometheus_conn_id=self.service.analysis.prometheus_conn_id)
        checks = []
        for dep in self.service.preflight.dependencies:
            try:
                value = hook.query(dep.query)
            except Exception as exc:
                checks.append(decide.check(f"dependency {dep.name}", False, f"cannot be queried: {exc}"))
                continue
            checks.append(decide.dependency_check(dep.name, value, dep.min, dep.max))
        return checks

    def _backup_check(self) -> dict[str, Any]:
        from opsdag.backups.storage import BackupStore
        from opsdag.paths import include_dir
        from opsdag.spec.database import DatabaseSpec
        from opsdag.spec.loader import load_file

        wanted = self.service.preflight.backup
        spec, errors = load_file(include_dir() / "databases" / f"{wanted.database}.yaml", DatabaseSpec)
        if spec is None:
            problem = "; ".join(str(e) for e in errors) or "not found"
            return decide.check(f"backup of {wanted.database} confirmed", False, f"database spec: {problem}")
        try:
            newest = BackupStore(spec.backup.storage, spec.backup.storage_conn_id).newest_verified(spec.name)
        except Exception as exc:
            return decide.check(f"backup of {wanted.database} confirmed", False, f"backups unreadable: {exc}")
        finished = newest.manifest.finished if newest and newest.manifest else None
        return decide.backup_check(wanted.database, finished, datetime.now(UTC), wanted.max_age)

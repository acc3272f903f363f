"""Check that a release can start safely and record the rollback target."""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from opsdag.operators.service_base import ServiceOperator


class ReleasePreflightOperator(ServiceOperator):
    """Record the current stable version; the router, the platform and Prometheus must answer;
    no other release of this service may be in flight.

    Pushes ``{"stable_image", "checks": [{"name", "ok", "detail"}]}`` and fails (without retry)
    when a check fails, before anything has changed.

    :param image: the image being released (a canary of this image left by a retry is not "another release").
    """

    template_fields = ("image",)

    def __init__(self, *, image: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.image = image

    def run(self, context: Any) -> dict[str, Any]:
        checks: list[dict[str, Any]] = []
        status = None
        try:
            status = self.platform.status()
            checks.append({"name": "platform and router reachable", "ok": True, "detail": "status read"})
        except Exception as exc:
            checks.append({"name": "platform and router reachable", "ok": False, "detail": str(exc)})
        if status is not None:
            checks.append(
                {
                    "name": "stable version healthy",
                    "ok": bool(status.stable_image) and status.stable_healthy,
                    "detail": f"stable {status.stable_image or 'none'}, healthy={status.stable_healthy}",
                }
            )
            in_flight = status.canary_image not in (None, self.image)
            checks.append(
                {
                    "name": "no other release in flight",
                    "ok": not in_flight,
                    "detail": f"canary {status.canary_image} at {status.canary_weight} % is deployed"
                    if in_flight
                    else "no other canary",
                }
            )
        checks.append(self._prometheus_check())
        result = {"stable_image": status.stable_image if status else None, "checks": checks}
        context["ti"].xcom_push(key="preflight", value=result)
        for check in checks:
            self.log.info(
                "preflight: %s: %s (%s)", check["name"], "ok" if check["ok"] else "FAILED", check["detail"]
            )
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
            return {"name": "Prometheus reachable", "ok": False, "detail": f"{conn_id}: {exc}"}
        return {"name": "Prometheus reachable", "ok": True, "detail": f"{conn_id} answers queries"}

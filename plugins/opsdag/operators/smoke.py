"""Smoke-test the new version's instances before they get traffic, and the stable ones after promotion."""

from __future__ import annotations

from typing import Any

import httpx
from airflow.sdk.exceptions import AirflowFailException

from opsdag.analysis.smoke_checks import SmokeResult, smoke_problems
from opsdag.operators.service_base import ServiceOperator


def smoke_test(checks: list[Any], endpoints: list[str]) -> list[SmokeResult]:
    """Send every check to every endpoint (plain GETs, each with its timeout)."""
    results = []
    for check in checks:
        for base in endpoints:
            url = base.rstrip("/") + check.path
            try:
                answer = httpx.get(url, timeout=check.timeout.total_seconds())
                results.append(SmokeResult(check.name, url, answer.status_code))
            except httpx.HTTPError as exc:
                results.append(SmokeResult(check.name, url, None, f"{type(exc).__name__}: {exc}"))
    return results


class SmokeCheckOperator(ServiceOperator):
    """Run the service's ``smoke`` checks against every instance of a track; fail on any surprise.

    :param track: ``canary`` (the new version, before traffic) or ``stable``.
    """

    def __init__(self, *, track: str = "canary", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.track = track

    def run(self, context: Any) -> dict[str, Any]:
        checks = list(self.service.smoke)
        self.skip_unless_moving(context, f"smoke-test the {self.track} instances ({len(checks)} check(s))")
        endpoints = self.driver.endpoints(self.track)
        results = smoke_test(checks, endpoints)
        problems = smoke_problems(checks, results)
        summary = {"checks": len(checks), "requests": len(results), "problems": problems}
        context["ti"].xcom_push(key="smoke", value=summary)
        if problems:
            raise AirflowFailException("smoke checks failed: " + "; ".join(problems))
        self.log.info("smoke: %d request(s) to %d instance(s), all as expected", len(results), len(endpoints))
        return summary

"""Smoke checks: one HTTP request per check to every instance, judged against its expected status."""

from __future__ import annotations

from dataclasses import dataclass

from opsdag.spec.service import SmokeCheck


@dataclass(frozen=True)
class SmokeResult:
    """What one request answered: ``status`` None when it got no answer (``error`` says why)."""

    check: str
    url: str
    status: int | None
    error: str = ""


def smoke_problems(checks: list[SmokeCheck], results: list[SmokeResult]) -> list[str]:
    """Every answer that is not the check's expected status, in words (empty: all passed)."""
    expected = {c.name: c.expect_status for c in checks}
    problems = []
    for r in results:
        if r.status is None:
            problems.append(f"{r.check}: {r.url}: no answer ({r.error})")
        elif r.status != expected[r.check]:
            problems.append(f"{r.check}: {r.url}: HTTP {r.status}, expected {expected[r.check]}")
    return problems

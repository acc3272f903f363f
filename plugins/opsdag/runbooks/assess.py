"""Severity and blast radius from metrics, without Airflow: the ``assess`` step's verdict.

The step reads its named PromQL figures once (e.g. the share of requests failing, the
share of instances down); ``severity`` walks the spec's levels from the worst to the
mildest and picks the first one that any figure reaches, with the numbers in words:
``"critical: error-share 0.12 >= 0.05"``. A figure without data reaches no level and is
named as such; no level reached is the spec's ``otherwise`` level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SeverityLevel:
    """``name`` applies when any figure named in ``at_least`` is at least its limit."""

    name: str
    at_least: Mapping[str, float]


def severity(
    figures: Mapping[str, float | None], levels: Sequence[SeverityLevel], otherwise: str
) -> tuple[str, str]:
    """``(level, reason)`` for ``figures``; ``levels`` ordered from the worst."""
    for level in levels:
        reached = [
            f"{name} {figures[name]:g} >= {limit:g}"
            for name, limit in level.at_least.items()
            if figures.get(name) is not None and figures[name] >= limit
        ]
        if reached:
            return level.name, f"{level.name}: {', '.join(reached)}"
    below = []
    for name in dict.fromkeys(n for level in levels for n in level.at_least):
        value = figures.get(name)
        if value is None:
            below.append(f"{name} no data")
        else:
            limit = min(level.at_least[name] for level in levels if name in level.at_least)
            below.append(f"{name} {value:g} < {limit:g}")
    return otherwise, f"{otherwise}: {', '.join(below) or 'no threshold'}"

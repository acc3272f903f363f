"""The report's monitoring figures as PromQL: the spec's queries made concrete for one release.

Pure (no Airflow): the report operator renders the queries here and asks
:meth:`opsdag.hooks.prometheus.PrometheusHook.query_figures` for their values.
"""

from __future__ import annotations

from collections.abc import Mapping

from opsdag.analysis.query import render_query
from opsdag.spec.service import Monitoring

# Prometheus' rate() needs a few scrapes in its window: a shorter release is measured over this.
MIN_WINDOW_S = 15


def monitoring_window_s(release_s: float) -> int:
    """The span the figures cover: the release's duration, at least :data:`MIN_WINDOW_S`."""
    return max(int(release_s), MIN_WINDOW_S)


def monitoring_queries(monitoring: Monitoring, selectors: Mapping[str, str], window_s: int) -> dict[str, str]:
    """One PromQL per figure: ``$window`` becomes ``<window_s>s``, ``$stable`` the platform's matchers.

    Raises ValueError when a query needs a selector the platform did not give.
    """
    window = f"{window_s}s"
    return {
        name: render_query(query.replace("$window", window), selectors)
        for name, query in monitoring.queries().items()
    }

"""Is an Airflow we started ready for opsdag's runs? Shared by standalone and the cluster.

Ready means: the API answers, the metadata database, a scheduler, the triggerer and the DAG
processor report healthy (``/api/v2/monitor/health``), and the release DAGs are parsed.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from opsdag.airflow_api import AirflowApiError, AirflowClient, Credentials

COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")


class Progress:
    """Says each waiting message once, not at every poll."""

    def __init__(self, progress: Callable[[str], None]) -> None:
        self._progress = progress
        self._last: str | None = None

    @property
    def last(self) -> str | None:
        """The last thing waited for (None before the first)."""
        return self._last

    def __call__(self, message: str) -> None:
        if message != self._last:
            self._last = message
            self._progress(f"  {message} ...")


def healthy(credentials: Credentials, say: Callable[[str], None]) -> bool:
    try:
        health = httpx.get(f"{credentials.url}/api/v2/monitor/health", timeout=3).json()
    except (httpx.HTTPError, ValueError):  # not up yet: no client needed for an unauthenticated probe
        say("waiting for the API server")
        return False
    waiting = [name for name in COMPONENTS if (health.get(name) or {}).get("status") != "healthy"]
    if waiting:
        say(f"waiting for {', '.join(waiting)}")
        return False
    try:
        with AirflowClient(credentials, timeout=5) as client:
            dags = client.request("GET", "/dags", attempts=1, params={"dag_id_pattern": "release__"})
    except (AirflowApiError, OSError, ValueError, KeyError) as exc:
        say(f"waiting for the API to list the DAGs ({type(exc).__name__})")
        return False
    if not dags.get("dags"):
        say("waiting for the DAGs to be parsed")
        return False
    return True

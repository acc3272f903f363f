"""Wait, in the triggerer, for a PromQL value to come within its bounds (a runbook's verify step).

``MetricBoundTrigger`` reads the query every ``interval_s`` until ``metric_verdict`` says
the value is within ``above``/``below`` (event ``passed``) or ``timeout_s`` is over
(event ``timeout``, with the last value and reason). An unreachable Prometheus or a
refused query counts as "not yet" and is reported with the last reading: the verify
step's verdict is only about the value it waits for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from opsdag.runbooks.engine import metric_verdict


class MetricBoundTrigger(BaseTrigger):
    """Poll ``query`` until it is within its bounds or ``timeout_s`` passes; yields one event.

    :param query: PromQL returning one value.
    :param above: the value must be above this (None: no lower bound).
    :param below: the value must be below this (None: no upper bound).
    :param timeout_s: how long to wait, in seconds.
    :param interval_s: seconds between readings.
    :param prometheus_conn_id: the Prometheus connection.
    """

    def __init__(
        self,
        *,
        query: str,
        above: float | None,
        below: float | None,
        timeout_s: float,
        interval_s: float,
        prometheus_conn_id: str = "prometheus_default",
    ) -> None:
        super().__init__()
        self.query = query
        self.above = above
        self.below = below
        self.timeout_s = timeout_s
        self.interval_s = interval_s
        self.prometheus_conn_id = prometheus_conn_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "query": self.query,
                "above": self.above,
                "below": self.below,
                "timeout_s": self.timeout_s,
                "interval_s": self.interval_s,
                "prometheus_conn_id": self.prometheus_conn_id,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from opsdag.hooks.prometheus import PrometheusHook

        hook = PrometheusHook(self.prometheus_conn_id)
        deadline = time.monotonic() + self.timeout_s
        readings, reason, value = 0, "no reading yet", None
        while True:
            readings += 1
            try:
                value = await hook.async_query(self.query)
                ok, reason = metric_verdict(value, above=self.above, below=self.below)
            except Exception as exc:  # unreachable or refused: not yet, and say why
                ok, reason, value = False, f"{type(exc).__name__}: {exc}", None
            if ok:
                yield TriggerEvent(self._event("passed", value, reason, readings))
                return
            if time.monotonic() + self.interval_s > deadline:
                yield TriggerEvent(self._event("timeout", value, reason, readings))
                return
            await asyncio.sleep(self.interval_s)

    def _event(self, status: str, value: float | None, reason: str, readings: int) -> dict[str, Any]:
        return {
            "status": status,
            "value": value,
            "reason": reason,
            "readings": readings,
            "at": datetime.now(UTC).isoformat(),
        }

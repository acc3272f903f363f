"""Instant PromQL queries against Prometheus through an Airflow connection.

No provider ships a Prometheus hook. This one reads an ``http``-style connection
(``AIRFLOW_CONN_PROMETHEUS_DEFAULT='{"conn_type": "http", "host": "127.0.0.1", "port": 9090}'``):
``schema`` is the scheme (``http`` unless given), ``host`` may also be a full URL with
a path prefix (``https://monitoring.example.com/prometheus``), ``login``/``password``
are sent as basic auth and never logged, and the extra ``{"verify": false}`` or
``{"verify": "/path/ca.pem"}`` sets TLS verification.

A gate asks for one number per query, so :meth:`PrometheusHook.query` returns a float,
or ``None`` when there is no data (empty result, NaN). Two failures are told apart
because the gate treats them differently: :class:`PrometheusUnavailable` (unreachable,
timed out, overloaded: wait and see, an inconclusive measurement) and
:class:`PrometheusQueryError` (the query is wrong as written: waiting will not help).

The connection is resolved when a query runs, never in ``__init__``, so parsing a DAG
opens nothing; in a trigger, :meth:`async_query` resolves it with the async-safe
``aget_connection`` so the triggerer's event loop never blocks on a secrets backend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from airflow.sdk import BaseHook

DEFAULT_TIMEOUT = 5.0


class PrometheusUnavailable(Exception):
    """Prometheus could not answer now (connection refused, timeout, 5xx): no data, not a verdict."""


class PrometheusQueryError(Exception):
    """Prometheus answered that the query cannot be evaluated, or it returned several series."""


@dataclass(frozen=True)
class _Endpoint:
    base_url: str
    auth: tuple[str, str] | None = field(repr=False)  # never in a log line
    verify: bool | str


class PrometheusHook(BaseHook):
    """Evaluate instant PromQL queries, returning one number.

    :param prometheus_conn_id: the Airflow connection of the Prometheus server.
    :param timeout: seconds for one HTTP request; gates measure every few seconds, so short.
    """

    conn_name_attr = "prometheus_conn_id"
    default_conn_name = "prometheus_default"
    conn_type = "http"
    hook_name = "Prometheus"

    def __init__(self, prometheus_conn_id: str = default_conn_name, *, timeout: float = DEFAULT_TIMEOUT):
        super().__init__()
        self.prometheus_conn_id = prometheus_conn_id
        self.timeout = timeout
        self._endpoint: _Endpoint | None = None

    # -- connection -------------------------------------------------------------------

    @staticmethod
    def _endpoint_from(conn: Any, extra: dict[str, Any]) -> _Endpoint:
        host = (conn.host or "").strip()
        if not host:
            raise ValueError(f"connection {conn.conn_id!r} has no host: set it to Prometheus' address")
        if "://" not in host:
            host = f"{(conn.schema or 'http').strip() or 'http'}://{host}"
        url = urlsplit(host.rstrip("/"))
        netloc = url.netloc if url.port or not conn.port else f"{url.netloc}:{conn.port}"
        base = urlunsplit((url.scheme, netloc, url.path, "", ""))
        auth = (conn.login, conn.password or "") if conn.login else None
        verify = extra.get("verify", True)
        return _Endpoint(base_url=base, auth=auth, verify=verify)

    def endpoint(self) -> _Endpoint:
        """The server's URL and credentials, read from the connection once per hook."""
        if self._endpoint is None:
            conn = self.get_connection(self.prometheus_conn_id)
            self._endpoint = self._endpoint_from(conn, conn.extra_dejson if conn.extra else {})
        return self._endpoint

    async def aendpoint(self) -> _Endpoint:
        """As :meth:`endpoint`, without blocking the event loop (for triggers)."""
        if self._endpoint is None:
            conn = await self.aget_connection(self.prometheus_conn_id)
            # aextra_dejson: the sync extra_dejson would block the loop to mask secrets
            extra = await conn.aextra_dejson() if conn.extra else {}
            self._endpoint = self._endpoint_from(conn, extra)
        return self._endpoint

    @property
    def base_url(self) -> str:
        """Prometheus' URL without credentials, for log lines and messages."""
        return self.endpoint().base_url

    def get_conn(self) -> httpx.Client:
        """A client for the Prometheus server; the caller closes it."""
        ep = self.endpoint()
        return httpx.Client(base_url=ep.base_url, auth=ep.auth, verify=ep.verify, timeout=self.timeout)

    # -- queries ----------------------------------------------------------------------

    def query(self, promql: str) -> float | None:
        """Evaluate ``promql`` now; its single value, or ``None`` when there is no data."""
        ep = self.endpoint()
        try:
            with self.get_conn() as client:
                response = client.get("/api/v1/query", params={"query": promql})
        except httpx.HTTPError as exc:
            raise _unavailable(ep, exc) from exc
        return _single_value(ep, response, promql)

    async def async_query(self, promql: str) -> float | None:
        """As :meth:`query`, for the triggerer's event loop."""
        ep = await self.aendpoint()
        try:
            async with httpx.AsyncClient(
                base_url=ep.base_url, auth=ep.auth, verify=ep.verify, timeout=self.timeout
            ) as client:
                response = await client.get("/api/v1/query", params={"query": promql})
        except httpx.HTTPError as exc:
            raise _unavailable(ep, exc) from exc
        return _single_value(ep, response, promql)

    def query_figures(self, queries: Mapping[str, str]) -> dict[str, float | None]:
        """Each named query's value; a figure that cannot be had is None (no data, never 0), and logged.

        Once Prometheus cannot be reached (or its connection is missing) the remaining
        figures are not asked for: they would only wait for the same timeout.
        """
        figures: dict[str, float | None] = dict.fromkeys(queries)
        for i, (name, promql) in enumerate(queries.items()):
            try:
                figures[name] = self.query(promql)
            except PrometheusQueryError as exc:
                self.log.warning("figure %s: no data: %s", name, exc)
            except Exception as exc:  # unreachable, no connection: a report never fails for a figure
                self.log.warning("figures %s: no data: %s", ", ".join(list(queries)[i:]), exc)
                break
        return figures

    def test_connection(self) -> tuple[bool, str]:
        """Whether Prometheus answers a query (the UI's Test button, and gates before they defer)."""
        try:
            self.query("vector(1)")
        except Exception as exc:
            return False, str(exc)
        return True, f"Prometheus at {self.base_url} answers queries"


def _unavailable(ep: _Endpoint, exc: httpx.HTTPError) -> PrometheusUnavailable:
    detail = str(exc) or "no detail"
    return PrometheusUnavailable(f"Prometheus unreachable at {ep.base_url} ({type(exc).__name__}: {detail})")


def _single_value(ep: _Endpoint, response: httpx.Response, promql: str) -> float | None:
    """Read Prometheus' answer: one value, ``None`` for no data, or the right exception."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code in (400, 422):
        # bad_data (400) and execution (422) errors come from the query itself.
        raise PrometheusQueryError(
            f"Prometheus rejected the query ({body.get('errorType', response.status_code)}: "
            f"{body.get('error', response.text[:200])}): {promql}"
        )
    if response.status_code in (401, 403):
        raise PrometheusUnavailable(
            f"Prometheus at {ep.base_url} refused the credentials of the connection "
            f"(HTTP {response.status_code}); check its login and password"
        )
    if response.status_code != 200 or body.get("status") != "success":
        error = body.get("error") or response.text[:200]
        raise PrometheusUnavailable(
            f"Prometheus at {ep.base_url} answered HTTP {response.status_code}: {error}"
        )
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return _number(result[1])
    if kind != "vector":
        raise PrometheusQueryError(
            f"the query returns a {kind}, not one number; make it an instant vector: {promql}"
        )
    if not result:
        return None
    if len(result) > 1:
        shown = ", ".join(_labels(series.get("metric", {})) for series in result[:3])
        raise PrometheusQueryError(
            f"the query returned {len(result)} series ({shown}{', ...' if len(result) > 3 else ''}); "
            f"aggregate it to one value (sum, max, avg): {promql}"
        )
    return _number(result[0]["value"][1])


def _number(text: str) -> float | None:
    value = float(text)
    return None if math.isnan(value) else value


def _labels(metric: dict[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items())) + "}"

"""A small client of Airflow's REST API v2, for triggering and following opsdag runs.

No Airflow import (the CLI must start fast). Credentials come from the environment
(``OPSDAG_AIRFLOW_URL``, ``OPSDAG_AIRFLOW_USER``, ``OPSDAG_AIRFLOW_PASSWORD``) or from a
JSON file (``OPSDAG_AIRFLOW_CREDENTIALS``, default ``<state>/airflow/api-credentials.json``,
written by ``make demo``) holding ``{"url", "username", "password"}``: never from the
command line, so that no password lands in a shell history or a process list.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from opsdag import paths

TERMINAL = {"success", "failed"}


class AirflowApiError(RuntimeError):
    """The API refused or could not be reached; the message says which and why.

    ``status`` is the HTTP status of a refusal, None when Airflow could not be reached.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Credentials:
    url: str
    username: str
    password: str

    def __repr__(self) -> str:  # never show the password
        return f"Credentials(url={self.url!r}, username={self.username!r})"


def credentials_file() -> Path:
    return Path(
        os.environ.get("OPSDAG_AIRFLOW_CREDENTIALS", paths.state_dir() / "airflow" / "api-credentials.json")
    )


def load_credentials() -> Credentials:
    env = os.environ
    if env.get("OPSDAG_AIRFLOW_URL") and env.get("OPSDAG_AIRFLOW_PASSWORD"):
        return Credentials(
            env["OPSDAG_AIRFLOW_URL"], env.get("OPSDAG_AIRFLOW_USER", "admin"), env["OPSDAG_AIRFLOW_PASSWORD"]
        )
    path = credentials_file()
    try:
        data = json.loads(path.read_text())
        return Credentials(data["url"], data["username"], data["password"])
    except (OSError, ValueError, KeyError) as exc:
        raise AirflowApiError(
            "no Airflow API credentials: set OPSDAG_AIRFLOW_URL, OPSDAG_AIRFLOW_USER and "
            f"OPSDAG_AIRFLOW_PASSWORD, or write {path} as "
            '{"url": ..., "username": ..., "password": ...} '
            f"({type(exc).__name__})"
        ) from None


class AirflowClient:
    """Token-authenticated calls to ``/api/v2``; one token per client."""

    def __init__(self, credentials: Credentials, *, timeout: float = 30.0) -> None:
        self.credentials = credentials
        self._http = httpx.Client(base_url=credentials.url.rstrip("/"), timeout=timeout)
        self._token: str | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _authorization(self) -> dict[str, str]:
        if self._token is None:
            try:
                response = self._http.post(
                    "/auth/token",
                    json={"username": self.credentials.username, "password": self.credentials.password},
                )
            except httpx.HTTPError as exc:
                raise AirflowApiError(f"Airflow at {self.credentials.url} cannot be reached: {exc}") from None
            if response.status_code >= 400:
                raise AirflowApiError(f"Airflow refused the credentials of {self.credentials.username!r}")
            self._token = response.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def request(self, method: str, path: str, *, attempts: int = 3, **kwargs: Any) -> Any:
        """One API call; reads and idempotent updates are retried when Airflow is briefly too busy."""
        retry = method in ("GET", "PATCH")
        for attempt in range(1, attempts + 1):
            try:
                response = self._http.request(
                    method, f"/api/v2{path}", headers=self._authorization(), **kwargs
                )
                break
            except httpx.HTTPError as exc:
                if not retry or attempt == attempts:
                    raise AirflowApiError(
                        f"Airflow at {self.credentials.url} cannot be reached: {exc}"
                    ) from None
                threading.Event().wait(2.0 * attempt)
        if response.status_code >= 400:
            raise AirflowApiError(
                f"{method} {path}: HTTP {response.status_code}: {_detail(response)}", response.status_code
            )
        return response.json() if response.content else None

    def trigger(
        self, dag_id: str, conf: dict[str, Any], note: str | None = None, *, attempts: int = 3
    ) -> dict[str, Any]:
        """Create a run; safe to retry: the run id is chosen here, so a retry cannot make a second run.

        A 5xx answer or a dropped connection is retried; if the first try did create the run,
        the retry's 409 is recognised and the existing run returned.
        """
        run_id = f"manual__{datetime.now(UTC).isoformat()}"
        body: dict[str, Any] = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        if note:
            body["note"] = note
        for attempt in range(1, attempts + 1):
            try:
                return self.request("POST", f"/dags/{_q(dag_id)}/dagRuns", json=body)
            except AirflowApiError as exc:
                status = exc.status
                if attempt > 1 and status == 409:
                    return self.dag_run(dag_id, run_id)
                if attempt == attempts or (status is not None and status < 500):
                    raise
                threading.Event().wait(2.0 * attempt)
        raise AssertionError("unreachable")

    def unpause(self, dag_id: str) -> None:
        self.request(
            "PATCH", f"/dags/{_q(dag_id)}", params={"update_mask": "is_paused"}, json={"is_paused": False}
        )

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}")

    def active_runs(self, dag_id: str) -> list[dict[str, Any]]:
        runs = self.request("GET", f"/dags/{_q(dag_id)}/dagRuns", params={"state": ["queued", "running"]})
        return runs.get("dag_runs", [])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        data = self.request(
            "GET", f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances", params={"limit": 100}
        )
        return data.get("task_instances", [])

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        try:
            entry = self.request(
                "GET",
                f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/xcomEntries/{_q(key)}",
                params={"deserialize": "true", "stringify": "false"},
            )
        except AirflowApiError:
            return None
        return entry.get("value") if entry else None

    def health(self) -> dict[str, Any]:
        try:
            return self._http.get("/api/v2/monitor/health").json()
        except (httpx.HTTPError, ValueError) as exc:
            raise AirflowApiError(f"Airflow at {self.credentials.url} is not answering: {exc}") from None


def _q(value: str) -> str:
    return quote(value, safe="")


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        return response.text[:500]
    if isinstance(detail, list):  # FastAPI validation errors
        return "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail)
    if isinstance(detail, dict):
        return str(detail.get("message") or detail)
    return str(detail)

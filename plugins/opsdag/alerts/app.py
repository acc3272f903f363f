"""``POST /opsdag/alerts``: Alertmanager's webhook receiver, mounted in Airflow's API server.

Airflow mounts a plugin's FastAPI app without its own authentication, so this app checks
a bearer token itself (``receiver.authenticate``) before reading the payload. Answers:
200 with what each alert started (or why not); 400 for a body that is not an Alertmanager
notification; 401 for a missing or wrong token; 413 for an oversized body; 503 when a
runbook's DAG is not in Airflow yet (Alertmanager retries 5xx, never 4xx).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from opsdag.alerts.payload import MAX_BYTES, PayloadRefused, parse
from opsdag.alerts.receiver import NotReady, Unauthorized, authenticate, receive

PREFIX = "/opsdag"


def create_app() -> FastAPI:
    app = FastAPI(title="opsdag alerts", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/alerts")
    async def alerts(request: Request) -> JSONResponse:
        try:
            authenticate(request.headers.get("authorization"))
        except Unauthorized as exc:
            return _refused(401, str(exc), {"WWW-Authenticate": "Bearer"})
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_BYTES:
            return _refused(413, f"the body has {declared} bytes; at most {MAX_BYTES} are accepted")
        body = await _read_limited(request)
        if body is None:
            return _refused(413, f"the body is larger than {MAX_BYTES} bytes")
        try:
            notification = parse(body)
        except PayloadRefused as exc:
            return _refused(400, str(exc))
        try:
            from starlette.concurrency import run_in_threadpool

            outcome = await run_in_threadpool(receive, notification)
        except NotReady as exc:
            return _refused(503, str(exc))
        return JSONResponse({"group": notification.groupKey, **outcome})

    return app


async def _read_limited(request: Request) -> bytes | None:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _refused(status: int, message: str, headers: dict[str, Any] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)

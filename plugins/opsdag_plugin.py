"""opsdag's Airflow plugin: Alertmanager's webhook receiver at ``/opsdag/alerts``.

Airflow loads every module of the plugins folder in every process, task processes
included, but only the API server serves the app: so the FastAPI app (and FastAPI itself,
0.4 s to import here) is built on the first request, not when the plugin is loaded. The
path is a contract: Alertmanager configs point at ``<airflow>/opsdag/alerts``.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin


class LazyAsgiApp:
    """An ASGI app that builds the real one (``opsdag.alerts.app.create_app``) when first called."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            from opsdag.alerts.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


class OpsdagPlugin(AirflowPlugin):
    name = "opsdag"
    fastapi_apps = [{"app": LazyAsgiApp(), "url_prefix": "/opsdag", "name": "opsdag alerts"}]

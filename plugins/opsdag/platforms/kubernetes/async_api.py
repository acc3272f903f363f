"""The Kubernetes reads of the triggerer, without a thread: ``KubeApi``'s ``get`` and ``list``, async.

Through the cncf-kubernetes provider's ``AsyncKubernetesHook`` on the same Airflow connection
as ``KubeApi`` (in-cluster, ``kube_config``, ``kube_config_path``, ``cluster_context``), whose
``get_conn()`` yields a ``kubernetes_asyncio`` ``ApiClient``, as ``BuildPodTrigger`` uses it.
A trigger polls a rollout with these, so one slow API answer never holds a thread of the
triggerer. Retries and errors are ``KubeApi``'s (``CallPolicy``): 429, 5xx and no answer
retried with the same backoff; a refusal raises ``KubeApiError`` naming the verb, the
resource and the namespace in the same words.
"""

from __future__ import annotations

import asyncio
from functools import cached_property
from typing import TYPE_CHECKING, Any

from opsdag.platforms.kubernetes.api import CallPolicy

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook


class AsyncKubeApi(CallPolicy):
    """Reads of one namespace, awaited (parameters: ``CallPolicy``'s)."""

    @cached_property
    def hook(self) -> AsyncKubernetesHook:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook

        return AsyncKubernetesHook(conn_id=self.conn_id)

    async def get(self, resource: str, name: str) -> dict[str, Any] | None:
        """The object, or None when there is none."""
        return await self.request("get", resource, name, missing_ok=True)

    async def list(self, resource: str, selector: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """The objects whose labels carry ``selector``."""
        answer = await self.request("list", resource, query=self.list_query(selector))
        return self.selected(answer, selector)

    async def request(
        self,
        verb: str,
        resource: str,
        name: str | None = None,
        *,
        query: list[tuple[str, str]] | None = None,
        missing_ok: bool = False,
    ) -> dict[str, Any] | None:
        """One GET, retried on 429, 5xx and no answer; its JSON (None: 404 and ``missing_ok``)."""
        import aiohttp
        from kubernetes_asyncio.client.exceptions import ApiException

        what = self.what(verb, resource, name)
        for attempt, delay in self.tries():
            try:
                async with self.hook.get_conn() as client:
                    return await client.call_api(
                        self.path(resource, name),
                        "GET",
                        query_params=query or [],
                        header_params={"Accept": "application/json"},
                        auth_settings=["BearerToken"],
                        response_types_map={200: "object"},  # the JSON as dicts, not models
                        _return_http_data_only=True,
                        _request_timeout=self.timeout,
                    )
            except ApiException as error:
                if error.status == 404 and missing_ok:
                    return None
                if (refusal := self.refused(error, attempt, verb, resource, what)) is not None:
                    raise refusal from None
            except (aiohttp.ClientError, TimeoutError) as error:
                if (failure := self.unanswered(error, attempt, what)) is not None:
                    raise failure from None
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

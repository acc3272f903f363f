"""The Kubernetes REST calls of the driver and its routers, as plain JSON objects.

Through the cncf-kubernetes provider's ``KubernetesHook`` (the Airflow connection
``platform.connection_id``: in-cluster, kubeconfig path or content), created on first use.
Objects go in and come out as dicts (the manifests are built as dicts by
:mod:`opsdag.platforms.kubernetes.manifests`), over the hook's ``ApiClient``.

- 429, 5xx and connection errors are retried with exponential backoff (``attempts`` in all);
- 403, a missing resource (404) and any other refusal raise ``KubeApiError`` (a
  ``PlatformError``) naming the verb, the resource and the namespace, e.g. ``patch
  deployments/checkout in namespace shop: 403 Forbidden: ...``; ``get`` and ``delete`` of an
  object that is not there answer None / False instead;
- changes are JSON merge patches (``application/merge-patch+json``), never full replaces;
  ``update`` reads the object, computes a patch guarded by its ``resourceVersion`` and, on
  409 Conflict (someone changed it in between), reads it again and recomputes;
- ``create`` of an object that already exists (409 AlreadyExists) returns the existing one,
  so a retried task converges instead of failing.

The paths (``GROUPS``), the retry policy and the errors' wording are ``CallPolicy``'s, shared
with ``AsyncKubeApi`` (:mod:`opsdag.platforms.kubernetes.async_api`), the triggerer's reads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any

from opsdag.platforms.base import PlatformError

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

# resource (plural) -> API group/version path
GROUPS = {
    "deployments": "/apis/apps/v1",
    "replicasets": "/apis/apps/v1",
    "services": "/api/v1",
    "pods": "/api/v1",
    "resourcequotas": "/api/v1",
    "ingresses": "/apis/networking.k8s.io/v1",
    "httproutes": "/apis/gateway.networking.k8s.io/v1",
    "selfsubjectaccessreviews": "/apis/authorization.k8s.io/v1",
}
CLUSTER_SCOPED = ("selfsubjectaccessreviews",)
RETRIED = (429, 500, 502, 503, 504)
MERGE_PATCH = "application/merge-patch+json"


class KubeApiError(PlatformError):
    """The API refused a call (``status``: its HTTP status, 0 when it never answered)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class CallPolicy:
    """What ``KubeApi`` and ``AsyncKubeApi`` share, so that both retry and word their errors alike.

    :param conn_id: a ``kubernetes`` Airflow connection.
    :param namespace: every call is made in this namespace.
    :param attempts: tries of one call when it meets 429, 5xx or no answer.
    :param backoff: seconds before the first retry; doubled after each, up to ``max_backoff``.
    :param timeout: seconds to wait for one answer.
    """

    def __init__(
        self,
        *,
        conn_id: str,
        namespace: str,
        attempts: int = 5,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        timeout: float = 30.0,
    ) -> None:
        self.conn_id = conn_id
        self.namespace = namespace
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout

    def path(self, resource: str, name: str | None) -> str:
        scope = "" if resource in CLUSTER_SCOPED else f"/namespaces/{self.namespace}"
        return f"{GROUPS[resource]}{scope}/{resource}" + (f"/{name}" if name else "")

    def what(self, verb: str, resource: str, name: str | None) -> str:
        """The call as its errors name it: ``get deployments/checkout in namespace shop``."""
        return f"{verb} {resource}" + (f"/{name}" if name else "") + f" in namespace {self.namespace}"

    def tries(self) -> Iterator[tuple[int, float]]:
        """``(attempt, seconds to wait when it fails)``, ``attempts`` times."""
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            yield attempt, delay
            delay = min(delay * 2, self.max_backoff)

    def refused(self, error: Any, attempt: int, verb: str, resource: str, what: str) -> KubeApiError | None:
        """The error to raise for the refusal ``error`` (either client's ``ApiException``); None: retry."""
        if error.status in RETRIED and attempt < self.attempts:
            return None
        return KubeApiError(f"{what}: {_describe(error)}{_hint(error.status, verb, resource)}", error.status)

    def unanswered(self, error: Exception, attempt: int, what: str) -> KubeApiError | None:
        """The error to raise when the API did not answer; None: retry."""
        if attempt < self.attempts:
            return None
        return KubeApiError(f"{what}: no answer after {attempt} attempts: {error}")

    @staticmethod
    def list_query(selector: dict[str, str] | None) -> list[tuple[str, str]]:
        from opsdag.platforms.kubernetes.manifests import selector_string

        return [("labelSelector", selector_string(selector))] if selector else []

    @staticmethod
    def selected(answer: dict[str, Any] | None, selector: dict[str, str] | None) -> list[dict[str, Any]]:
        """A list's items whose labels carry ``selector`` (checked here too: a selector is a filter)."""
        from opsdag.platforms.kubernetes.manifests import matches

        items = (answer or {}).get("items") or []
        if selector:
            items = [i for i in items if matches(selector, i.get("metadata", {}).get("labels") or {})]
        return items


class KubeApi(CallPolicy):
    """The namespace ``namespace`` of the cluster behind the Airflow connection ``conn_id``.

    Parameters: ``CallPolicy``'s. Blocking: the triggerer reads through ``AsyncKubeApi``.
    """

    @cached_property
    def client(self) -> ApiClient:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        return KubernetesHook(conn_id=self.conn_id).api_client

    # -- objects -----------------------------------------------------------------------------

    def get(self, resource: str, name: str) -> dict[str, Any] | None:
        """The object, or None when there is none."""
        return self.request("get", "GET", resource, name, missing_ok=True)

    def list(self, resource: str, selector: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """The objects whose labels carry ``selector``."""
        return self.selected(self.request("list", "GET", resource, query=self.list_query(selector)), selector)

    def create(self, resource: str, body: dict[str, Any], *, read_first: bool = False) -> dict[str, Any]:
        """Create ``body``; one already there (a retried task) is returned as it is.

        ``read_first``: look for it first (when it usually exists: one call instead of two).
        """
        name = body["metadata"]["name"]
        if read_first and (existing := self.get(resource, name)) is not None:
            return existing
        try:
            return self.request("create", "POST", resource, body=body) or {}
        except KubeApiError as error:
            if error.status != 409:
                raise
        existing = self.get(resource, name)
        if existing is None:
            raise KubeApiError(f"create {resource}/{name} in namespace {self.namespace}: 409, then not found")
        return existing

    def merge_patch(self, resource: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Apply a JSON merge patch (a list in it replaces the whole list; null deletes a key)."""
        return self.request("patch", "PATCH", resource, name, body=patch, content_type=MERGE_PATCH) or {}

    def update(
        self,
        resource: str,
        name: str,
        change: Callable[[dict[str, Any]], dict[str, Any] | None],
        current: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Read the object, patch it with ``change(obj)`` (None: nothing to change), re-read on 409.

        ``change`` should put the object's ``metadata.resourceVersion`` in its patch, so a
        concurrent change makes the API answer 409 rather than be overwritten. ``current``:
        the object as just read (saves the first read).
        """
        for _ in range(self.attempts):
            if current is None:
                current = self.request("get", "GET", resource, name)
                assert current is not None  # a missing object raised
            patch = change(current)
            if patch is None:
                return current
            try:
                return self.merge_patch(resource, name, patch)
            except KubeApiError as error:
                if error.status != 409:
                    raise
            current = None
        raise KubeApiError(
            f"patch {resource}/{name} in namespace {self.namespace}: still 409 Conflict after "
            f"{self.attempts} reads: another writer keeps changing it",
            409,
        )

    def delete(self, resource: str, name: str) -> bool:
        """Delete the object (its dependents in the background); False when it was not there."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        return self.request("delete", "DELETE", resource, name, body=body, missing_ok=True) is not None

    def allowed(self, verb: str, group: str, resource: str) -> tuple[bool, str]:
        """Whether the connection's account may ``verb`` ``resource`` here (a SelfSubjectAccessReview)."""
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "namespace": self.namespace,
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                }
            },
        }
        answer = self.request("create", "POST", "selfsubjectaccessreviews", body=review) or {}
        status = answer.get("status") or {}
        return bool(status.get("allowed")), status.get("reason") or status.get("evaluationError") or ""

    # -- one call ----------------------------------------------------------------------------

    def request(
        self,
        verb: str,
        method: str,
        resource: str,
        name: str | None = None,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        missing_ok: bool = False,
    ) -> dict[str, Any] | None:
        """One API call, retried on 429, 5xx and no answer; the answer's JSON (None: 404 and missing_ok)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        what = self.what(verb, resource, name)
        for attempt, delay in self.tries():
            try:
                response = self.client.call_api(
                    self.path(resource, name),
                    method,
                    query_params=query or [],
                    header_params={"Accept": "application/json", "Content-Type": content_type},
                    body=body,
                    auth_settings=["BearerToken"],
                    _preload_content=False,
                    _return_http_data_only=True,
                    _request_timeout=self.timeout,
                )
                data = response.data
                return json.loads(data) if data else {}
            except ApiException as error:
                if error.status == 404 and missing_ok:
                    return None
                if (refusal := self.refused(error, attempt, verb, resource, what)) is not None:
                    raise refusal from None
            except HTTPError as error:
                if (failure := self.unanswered(error, attempt, what)) is not None:
                    raise failure from None
            time.sleep(delay)
        raise AssertionError("unreachable")


def _describe(error: Any) -> str:
    message = ""
    try:
        message = json.loads(error.body or "{}").get("message", "")
    except (TypeError, ValueError, AttributeError):
        message = str(error.body or "")[:300]
    return f"{error.status} {error.reason}" + (f": {message}" if message else "")


def _hint(status: int, verb: str, resource: str) -> str:
    if status == 403:
        return f" (the connection's account needs the RBAC verb {verb!r} on {resource})"
    if status == 404:
        return " (check platform.namespace and the object's name in the service spec)"
    return ""

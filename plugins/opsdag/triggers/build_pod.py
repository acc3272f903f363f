"""Wait in the triggerer for an in-cluster build pod to end (``KanikoBuilder.trigger``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from opsdag.builders.build_pod import BuildPod, PodOutcome, gone_message, late_message, pod_outcome


class BuildPodTrigger(BaseTrigger):
    """Waits in the triggerer for a build pod to end; one event: a ``PodOutcome`` as a dict.

    ``AsyncKubernetesHook`` (same connection as the builder) reads the pod every
    ``poll_interval`` seconds until its build container has terminated, it failed for a
    reason that waiting cannot cure, it vanished (``gone``) or ``deadline`` (epoch seconds)
    passed (``timeout``). The operator hands the event to ``KanikoBuilder.finish``.

    :param pod_name: the build pod.
    :param namespace: its namespace.
    :param kubernetes_conn_id: the Airflow connection of the cluster.
    :param poll_interval: seconds between two reads.
    :param started: when the build was started (epoch seconds; for the timeout's message).
    :param deadline: when to give up (epoch seconds).
    """

    def __init__(
        self,
        *,
        pod_name: str,
        namespace: str,
        kubernetes_conn_id: str,
        poll_interval: float,
        started: float,
        deadline: float,
    ) -> None:
        super().__init__()
        self.pod_name = pod_name
        self.namespace = namespace
        self.kubernetes_conn_id = kubernetes_conn_id
        self.poll_interval = poll_interval
        self.started = started
        self.deadline = deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "pod_name": self.pod_name,
                "namespace": self.namespace,
                "kubernetes_conn_id": self.kubernetes_conn_id,
                "poll_interval": self.poll_interval,
                "started": self.started,
                "deadline": self.deadline,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook
        from kubernetes_asyncio.client import CoreV1Api as AsyncCoreV1Api
        from kubernetes_asyncio.client.exceptions import ApiException as AsyncApiException

        hook = AsyncKubernetesHook(conn_id=self.kubernetes_conn_id)
        name, namespace = self.pod_name, self.namespace
        failures = 0
        while True:
            try:
                async with hook.get_conn() as connection:
                    pod = await AsyncCoreV1Api(connection).read_namespaced_pod(name, namespace)
                failures = 0
            except AsyncApiException as error:
                if error.status == 404:
                    yield TriggerEvent(PodOutcome("gone", message=gone_message(name, namespace)).to_event())
                    return
                failures += 1
                if error.status not in (429, 500, 502, 503, 504) or failures >= 4:
                    message = f"get pods in namespace {namespace}: {error.status} {error.reason}"
                    yield TriggerEvent(PodOutcome("failed", "ApiError", None, message).to_event())
                    return
                await asyncio.sleep(min(0.5 * 2**failures, 8))
                continue
            outcome = pod_outcome(pod)
            if outcome.state in ("succeeded", "failed"):
                yield TriggerEvent(outcome.to_event())
                return
            if time.time() >= self.deadline:
                late = BuildPod(name, namespace, "", False, self.started, self.deadline)
                yield TriggerEvent(
                    PodOutcome(
                        "timeout", message=late_message(name, namespace, late, pod, outcome)
                    ).to_event()
                )
                return
            await asyncio.sleep(self.poll_interval)

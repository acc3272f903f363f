"""Run an in-cluster build pod to its end and read the pushed image's digest.

``KanikoBuilder(settings=...).build(KanikoBuild(...))`` creates the pod made by
``kaniko_pod.build_pod_manifest`` through the cncf-kubernetes provider's
``KubernetesHook`` (connection ``kubernetes_default`` unless told otherwise), waits for
it, and returns a ``KanikoBuildResult`` with ``repository@sha256:<digest>``.

- **Safe to retry**: the pod's name comes from the service and the run. If a pod of that
  name exists and carries the same build (its ``opsdag.io/build-spec`` annotation), it is
  adopted: a running one is waited for, a succeeded one read, a failed one reported as
  the failure it was. A pod of that name doing something else is never touched: the
  build stops, naming it. A pod being deleted is waited out, then created anew.
- **Two ways to wait**, one reading of a pod (``pod_outcome``, pure):
  ``build()`` = ``start()`` + a bounded poll in this process (``wait()``: ``poll_interval``,
  ``timeout``) + ``finish()``; or, in a deferrable operator, ``start()`` then
  ``self.defer(trigger=builder.trigger(handle), ...)`` and ``finish(handle,
  PodOutcome.from_event(event))`` when ``BuildPodTrigger`` (``AsyncKubernetesHook``) fires:
  no worker slot is held while the build runs. The cluster itself ends the pod after
  ``activeDeadlineSeconds`` (``KanikoSettings.timeout_seconds``) even if nobody waits.
- **The digest** is the build container's ``state.terminated.message`` (the executor's
  ``--digest-file=/dev/termination-log``). Anything but ``sha256:<64 hex>`` is refused,
  quoting what was found.
- **A failure** names the terminated reason and exit code (or the waiting reason that can
  never end by itself: ``ErrImagePull``, ``ImagePullBackOff``, a missing secret's
  ``CreateContainerConfigError``...), the pod's own reason (``DeadlineExceeded``,
  ``Evicted``) and the last lines of the build log (``read_namespaced_pod_log``).
- **Cleanup**: ``delete_pod`` is ``"always"`` (default), ``"on_success"`` (keep a failed
  pod to inspect; a retry of the same run then reports the same failure until it is
  deleted) or ``"never"``.
- API calls that fail with 429 or 5xx are retried with backoff (a create retried after a
  lost answer finds its own pod and adopts it); 403 and other refusals stop the build with
  the verb, the resource and the namespace.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from airflow.triggers.base import BaseTrigger, TriggerEvent
from kubernetes.client.exceptions import ApiException

from opsdag.builds.kaniko_pod import (
    ANNOTATION_SPEC,
    CONTAINER,
    KanikoBuild,
    KanikoSettings,
    build_pod_manifest,
    split_reference,
)

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
    from kubernetes.client import CoreV1Api, V1Pod

log = logging.getLogger(__name__)

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# Waiting reasons that do not resolve by waiting: the build has failed, say why now.
STUCK_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImageNeverPull",
    }
)
DeletePolicy = Literal["always", "on_success", "never"]


class KanikoBuildError(RuntimeError):
    """The build could not be run or its result read (API refusal, foreign pod, bad digest, timeout)."""


class KanikoBuildFailed(KanikoBuildError):
    """The build pod ended without an image: its reason, exit code, message and last log lines."""

    def __init__(
        self,
        *,
        pod: str,
        namespace: str,
        reason: str | None,
        exit_code: int | None,
        message: str | None,
        log_tail: str,
    ) -> None:
        self.pod, self.namespace, self.reason = pod, namespace, reason
        self.exit_code, self.message, self.log_tail = exit_code, message, log_tail
        what = f"reason {reason or 'unknown'}"
        if exit_code is not None:
            what += f", exit code {exit_code}"
        if message:
            what += f", message {message.strip()[:500]!r}"
        text = f"build pod {pod} (namespace {namespace}) failed: {what}"
        text += f"\nlast log lines:\n{log_tail}" if log_tail.strip() else "\n(no log lines)"
        super().__init__(text)


@dataclass(frozen=True)
class KanikoBuildResult:
    """A pushed image: ``image`` is ``repository@sha256:...`` of the first destination."""

    image: str
    digest: str
    pod_name: str
    namespace: str
    seconds: float
    adopted: bool


@dataclass(frozen=True)
class PodOutcome:
    """Where a build pod is, and why: ``pending``, ``running``, ``succeeded``, ``failed``, or,
    from a waiter, ``timeout`` / ``gone`` (``message`` says what was seen)."""

    state: Literal["pending", "running", "succeeded", "failed", "timeout", "gone"]
    reason: str | None = None
    exit_code: int | None = None
    message: str | None = None
    seconds: float | None = None

    def to_event(self) -> dict[str, Any]:
        """A trigger event's payload (plain JSON values)."""
        return asdict(self)

    @classmethod
    def from_event(cls, payload: dict[str, Any]) -> PodOutcome:
        return cls(
            **{key: payload.get(key) for key in ("state", "reason", "exit_code", "message", "seconds")}
        )


@dataclass(frozen=True)
class BuildPod:
    """A build pod this run owns (created or adopted): what ``wait`` and ``finish`` need.

    ``deadline`` is wall-clock (epoch seconds) so that it survives a deferral to the triggerer.
    """

    pod_name: str
    namespace: str
    repository: str
    adopted: bool
    started: float
    deadline: float


def pod_outcome(pod: V1Pod) -> PodOutcome:
    """Read a build pod's state from its status (pure: no API call)."""
    status = pod.status
    phase = status.phase if status is not None else None
    container = None
    for candidate in (status.container_statuses or []) if status is not None else []:
        if candidate.name == CONTAINER:
            container = candidate
    state = container.state if container is not None else None
    if state is not None and state.terminated is not None:
        term = state.terminated
        seconds = _seconds(term.started_at, term.finished_at)
        if term.exit_code == 0:
            return PodOutcome("succeeded", term.reason, 0, term.message, seconds)
        return PodOutcome("failed", term.reason, term.exit_code, term.message, seconds)
    if phase == "Failed":
        return PodOutcome("failed", status.reason or "Failed", None, status.message)
    if phase == "Succeeded":  # no container status: nothing to read the digest from
        return PodOutcome(
            "failed",
            "NoContainerStatus",
            None,
            f"the pod succeeded without a status for container {CONTAINER!r}",
        )
    if state is not None and state.waiting is not None and state.waiting.reason in STUCK_REASONS:
        return PodOutcome("failed", state.waiting.reason, None, state.waiting.message)
    if state is not None and state.running is not None:
        return PodOutcome("running")
    return PodOutcome("pending", state.waiting.reason if state is not None and state.waiting else None)


def read_digest(outcome: PodOutcome, pod: str) -> str:
    """The digest in a succeeded pod's termination message, or KanikoBuildError quoting what is there."""
    found = (outcome.message or "").strip()
    if not DIGEST.match(found):
        raise KanikoBuildError(
            f"build pod {pod} succeeded but its termination message is not a digest "
            f"(expected sha256:<64 hex>, found {found[:200]!r}); is the executor run with "
            "--digest-file=/dev/termination-log?"
        )
    return found


class KanikoBuilder:
    """Builds and pushes images with build pods in a cluster.

    :param settings: the executor image, namespace, registry secret, resources and timeout.
    :param kubernetes_conn_id: the Airflow connection of the cluster.
    :param poll_interval: seconds between two reads of the pod.
    :param timeout: seconds to wait for the pod (default: the pod's deadline + 60 s).
    :param delete_pod: ``always``, ``on_success`` or ``never``.
    :param log_lines: how many lines of the build log a failure quotes.
    """

    def __init__(
        self,
        *,
        settings: KanikoSettings,
        kubernetes_conn_id: str = "kubernetes_default",
        poll_interval: float = 2.0,
        timeout: float | None = None,
        delete_pod: DeletePolicy = "always",
        log_lines: int = 40,
    ) -> None:
        if delete_pod not in ("always", "on_success", "never"):
            raise ValueError(f"delete_pod: {delete_pod!r} is not one of always, on_success, never")
        self.settings = settings
        self.kubernetes_conn_id = kubernetes_conn_id
        self.poll_interval = poll_interval
        self.timeout = timeout if timeout is not None else settings.timeout_seconds + 60
        self.delete_pod = delete_pod
        self.log_lines = log_lines

    @cached_property
    def hook(self) -> KubernetesHook:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        return KubernetesHook(conn_id=self.kubernetes_conn_id)

    @cached_property
    def core_v1(self) -> CoreV1Api:
        return self.hook.core_v1_client

    def build(self, build: KanikoBuild) -> KanikoBuildResult:
        """Run ``build`` in a pod (or adopt this run's pod), wait, and return the image by digest."""
        handle = self.start(build)
        try:
            outcome = self.wait(handle)
        except BaseException:
            self._clean_up(handle, succeeded=False)
            raise
        return self.finish(handle, outcome)

    def start(self, build: KanikoBuild) -> BuildPod:
        """Create this run's build pod, or adopt it; nothing is waited for."""
        manifest = build_pod_manifest(build, self.settings)
        repository, _ = split_reference(build.destinations[0])
        now = time.time()
        adopted = self.submit(manifest, now + self.timeout)
        return BuildPod(
            pod_name=manifest["metadata"]["name"],
            namespace=manifest["metadata"]["namespace"],
            repository=repository,
            adopted=adopted,
            started=now,
            deadline=now + self.timeout,
        )

    def trigger(self, handle: BuildPod) -> BuildPodTrigger:
        """The deferrable wait for ``handle`` (the triggerer polls; ``finish`` reads its event)."""
        return BuildPodTrigger(
            pod_name=handle.pod_name,
            namespace=handle.namespace,
            kubernetes_conn_id=self.kubernetes_conn_id,
            poll_interval=self.poll_interval,
            started=handle.started,
            deadline=handle.deadline,
        )

    def wait(self, handle: BuildPod) -> PodOutcome:
        """Poll the pod in this process until it has succeeded or failed; KanikoBuildError at the deadline."""
        name, namespace = handle.pod_name, handle.namespace
        while True:
            try:
                pod = self._call("get", namespace, lambda: self.core_v1.read_namespaced_pod(name, namespace))
            except ApiException as error:
                if error.status == 404:
                    raise KanikoBuildError(_gone(name, namespace)) from error
                raise self._refused("get", namespace, error) from error
            outcome = pod_outcome(pod)
            if outcome.state in ("succeeded", "failed"):
                return outcome
            if time.time() >= handle.deadline:
                raise KanikoBuildError(_late(name, namespace, handle, pod, outcome))
            time.sleep(self.poll_interval)

    def finish(self, handle: BuildPod, outcome: PodOutcome) -> KanikoBuildResult:
        """The result of a finished pod (from ``wait`` or the trigger's event), then the cleanup.

        Raises KanikoBuildFailed (with the log tail) for a failed build, KanikoBuildError for
        a pod that timed out, vanished or did not report a digest.
        """
        name, namespace = handle.pod_name, handle.namespace
        try:
            if outcome.state == "failed":
                raise KanikoBuildFailed(
                    pod=name,
                    namespace=namespace,
                    reason=outcome.reason,
                    exit_code=outcome.exit_code,
                    message=outcome.message,
                    log_tail=self.log_tail(name, namespace),
                )
            if outcome.state != "succeeded":
                raise KanikoBuildError(outcome.message or f"build pod {name}: {outcome.state}")
            digest = read_digest(outcome, name)
        except BaseException:
            self._clean_up(handle, succeeded=False)
            raise
        self._clean_up(handle, succeeded=True)
        seconds = outcome.seconds if outcome.seconds is not None else time.time() - handle.started
        return KanikoBuildResult(
            image=f"{handle.repository}@{digest}",
            digest=digest,
            pod_name=name,
            namespace=namespace,
            seconds=round(seconds, 3),
            adopted=handle.adopted,
        )

    def _clean_up(self, handle: BuildPod, *, succeeded: bool) -> None:
        if self.delete_pod == "never" or (self.delete_pod == "on_success" and not succeeded):
            return
        try:
            self.delete(handle.pod_name, handle.namespace)
        except KanikoBuildError as error:
            if succeeded:
                raise
            log.warning("could not delete build pod %s: %s", handle.pod_name, error)  # never hide the failure

    def submit(self, manifest: dict[str, Any], deadline: float) -> bool:
        """Create the pod, or adopt this run's existing one; True if adopted."""
        name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        while True:
            try:
                self._call(
                    "create", namespace, lambda: self.core_v1.create_namespaced_pod(namespace, manifest)
                )
                log.info("created build pod %s in namespace %s", name, namespace)
                return False
            except ApiException as error:
                if error.status != 409:
                    raise self._refused("create", namespace, error) from error
            try:
                existing = self._call(
                    "get", namespace, lambda: self.core_v1.read_namespaced_pod(name, namespace)
                )
            except ApiException as error:
                if error.status == 404:  # deleted in between: create again
                    continue
                raise self._refused("get", namespace, error) from error
            want = manifest["metadata"]["annotations"][ANNOTATION_SPEC]
            have = (existing.metadata.annotations or {}).get(ANNOTATION_SPEC)
            if have != want:
                raise KanikoBuildError(
                    f"pod {name} (namespace {namespace}) exists but is not this build (its "
                    f"{ANNOTATION_SPEC} is {have!r}, this build's is {want!r}); it was left alone: "
                    "delete it or change the run"
                )
            if existing.metadata.deletion_timestamp is None:
                phase = existing.status.phase if existing.status is not None else None
                log.info("adopted this run's build pod %s in namespace %s (phase %s)", name, namespace, phase)
                return True
            log.info("build pod %s is being deleted; waiting for it to go before creating it again", name)
            self._wait_gone(name, namespace, deadline)

    def log_tail(self, name: str, namespace: str) -> str:
        """The last ``log_lines`` lines of the build container's log, or why they cannot be read."""
        try:
            response = self.core_v1.read_namespaced_pod_log(
                name, namespace, container=CONTAINER, tail_lines=self.log_lines, _preload_content=False
            )
            data = response.data
            text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        except ApiException as error:
            return f"(logs unavailable: {error.status} {error.reason})"
        return "\n".join(text.splitlines()[-self.log_lines :])

    def delete(self, name: str, namespace: str) -> None:
        """Delete the build pod; a pod already gone is fine."""
        try:
            self._call("delete", namespace, lambda: self.core_v1.delete_namespaced_pod(name, namespace))
            log.info("deleted build pod %s in namespace %s", name, namespace)
        except ApiException as error:
            if error.status != 404:
                raise self._refused("delete", namespace, error) from error

    def _wait_gone(self, name: str, namespace: str, deadline: float) -> None:
        while time.time() < deadline:
            try:
                self._call("get", namespace, lambda: self.core_v1.read_namespaced_pod(name, namespace))
            except ApiException as error:
                if error.status == 404:
                    return
                raise self._refused("get", namespace, error) from error
            time.sleep(self.poll_interval)
        raise KanikoBuildError(
            f"pod {name} (namespace {namespace}) is still being deleted after {self.timeout:.0f} s"
        )

    def _call(self, verb: str, namespace: str, call: Any, attempts: int = 4) -> Any:
        delay = 0.5
        for attempt in range(attempts):
            try:
                return call()
            except ApiException as error:
                if error.status not in (429, 500, 502, 503, 504) or attempt == attempts - 1:
                    raise
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def _refused(self, verb: str, namespace: str, error: ApiException) -> KanikoBuildError:
        return KanikoBuildError(
            f"{verb} pods in namespace {namespace}: {error.status} {error.reason}: {_api_message(error)}"
        )


def _api_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body).get("message") or error.body)[:300]
    except (TypeError, ValueError, AttributeError):
        return str(error.body)[:300]


def _seconds(started: datetime | None, finished: datetime | None) -> float | None:
    if started is None or finished is None:
        return None
    return max(0.0, (finished - started).total_seconds())


def _gone(name: str, namespace: str) -> str:
    return f"build pod {name} (namespace {namespace}) disappeared before it finished"


def _late(name: str, namespace: str, handle: BuildPod, pod: Any, outcome: PodOutcome) -> str:
    phase = pod.status.phase if pod.status is not None else None
    detail = f"phase {phase}, {outcome.state}" + (f", {outcome.reason}" if outcome.reason else "")
    return (
        f"build pod {name} (namespace {namespace}) did not finish within "
        f"{handle.deadline - handle.started:.0f} s ({detail})"
    )


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
                    yield TriggerEvent(PodOutcome("gone", message=_gone(name, namespace)).to_event())
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
                    PodOutcome("timeout", message=_late(name, namespace, late, pod, outcome)).to_event()
                )
                return
            await asyncio.sleep(self.poll_interval)

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

import logging
import time
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from kubernetes.client.exceptions import ApiException

from opsdag.builders.build_pod import (  # noqa: F401  (re-exported: the builder's API)
    DIGEST,
    STUCK_REASONS,
    BuildPod,
    KanikoBuildError,
    KanikoBuildFailed,
    PodOutcome,
    api_message,
    build_seconds,
    gone_message,
    late_message,
    pod_outcome,
    read_digest,
)
from opsdag.builders.kaniko_pod import (
    ANNOTATION_SPEC,
    CONTAINER,
    KanikoBuild,
    KanikoSettings,
    build_pod_manifest,
    split_reference,
)

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
    from kubernetes.client import CoreV1Api

from opsdag.triggers.build_pod import BuildPodTrigger

log = logging.getLogger(__name__)

DeletePolicy = Literal["always", "on_success", "never"]


@dataclass(frozen=True)
class KanikoBuildResult:
    """A pushed image: ``image`` is ``repository@sha256:...`` of the first destination."""

    image: str
    digest: str
    pod_name: str
    namespace: str
    seconds: float
    adopted: bool


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
                    raise KanikoBuildError(gone_message(name, namespace)) from error
                raise self._refused("get", namespace, error) from error
            outcome = pod_outcome(pod)
            if outcome.state in ("succeeded", "failed"):
                return outcome
            if time.time() >= handle.deadline:
                raise KanikoBuildError(late_message(name, namespace, handle, pod, outcome))
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
            f"{verb} pods in namespace {namespace}: {error.status} {error.reason}: {api_message(error)}"
        )

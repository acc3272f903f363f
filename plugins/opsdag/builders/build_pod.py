"""A build pod as the builder and its trigger read it: its outcome, its digest, the errors.

Pure reading of the Kubernetes API's pod objects (no API calls here), shared by
``kaniko_builder`` (which waits in the worker) and ``triggers.build_pod`` (which waits in
the triggerer), so both decide the same way.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from opsdag.builders.kaniko_pod import CONTAINER

if TYPE_CHECKING:
    from kubernetes.client import V1Pod
    from kubernetes.client.exceptions import ApiException

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
        seconds = build_seconds(term.started_at, term.finished_at)
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


def api_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body).get("message") or error.body)[:300]
    except (TypeError, ValueError, AttributeError):
        return str(error.body)[:300]


def build_seconds(started: datetime | None, finished: datetime | None) -> float | None:
    if started is None or finished is None:
        return None
    return max(0.0, (finished - started).total_seconds())


def gone_message(name: str, namespace: str) -> str:
    return f"build pod {name} (namespace {namespace}) disappeared before it finished"


def late_message(name: str, namespace: str, handle: BuildPod, pod: Any, outcome: PodOutcome) -> str:
    phase = pod.status.phase if pod.status is not None else None
    detail = f"phase {phase}, {outcome.state}" + (f", {outcome.reason}" if outcome.reason else "")
    return (
        f"build pod {name} (namespace {namespace}) did not finish within "
        f"{handle.deadline - handle.started:.0f} s ({detail})"
    )

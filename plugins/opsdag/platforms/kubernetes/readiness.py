"""Whether a Deployment's rollout is done, still going, or failed for good (pure, no I/O).

Read as ``kubectl rollout status`` reads it: the controller has seen the newest spec
(``status.observedGeneration >= metadata.generation``), every replica runs the newest
template (``updatedReplicas``), is available (``availableReplicas``) and no old one is left
(``replicas``). Failed for good: the ``Progressing`` condition says
``ProgressDeadlineExceeded``, or a pod's container waits in a state that does not heal by
itself (``CrashLoopBackOff``, ``ImagePullBackOff``, ``InvalidImageName``...), named in the
reason with the pod, the container and the kubelet's message.
"""

from __future__ import annotations

from typing import Any

from opsdag.platforms.base import CANARY, STABLE, PlatformError, Readiness, Track
from opsdag.platforms.kubernetes.manifests import TRACK_LABEL

UNPULLABLE = "opsdag.io/unpullable"  # annotation on a canary whose image its registry does not have

# Waiting reasons after which a container will not start without a change to the pod's spec.
FATAL_WAITING = (
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
)


def replica_counts(deployment: dict[str, Any]) -> tuple[int, int]:
    """``(desired replicas, ready replicas running the newest template)``."""
    spec, status = deployment.get("spec", {}), deployment.get("status") or {}
    desired = int(spec.get("replicas", 1))
    ready = min(int(status.get("readyReplicas") or 0), int(status.get("updatedReplicas") or 0))
    return desired, min(ready, desired) if observed(deployment) else 0


def observed(deployment: dict[str, Any]) -> bool:
    """Whether the Deployment controller has acted on the newest spec."""
    generation = int(deployment.get("metadata", {}).get("generation") or 0)
    return int((deployment.get("status") or {}).get("observedGeneration") or 0) >= generation


def pod_failure(pods: list[dict[str, Any]]) -> str | None:
    """Why these pods will not become ready by themselves (the first fatal container state), or None."""
    for pod in sorted(pods, key=lambda p: p.get("metadata", {}).get("name", "")):
        name = pod.get("metadata", {}).get("name", "?")
        statuses = (pod.get("status") or {}).get("initContainerStatuses") or []
        statuses = statuses + ((pod.get("status") or {}).get("containerStatuses") or [])
        for container in statuses:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in FATAL_WAITING:
                message = waiting.get("message") or ""
                restarts = container.get("restartCount") or 0
                detail = f"{reason}: {message}" if message else reason
                if reason == "CrashLoopBackOff":
                    detail += f" (restarted {restarts} time(s))"
                what = f"container {container.get('name', '?')} ({container.get('image', '?')})"
                return f"pod {name}, {what}: {detail}"
    return None


def deadline_exceeded(deployment: dict[str, Any]) -> str | None:
    """The ``Progressing`` condition's message when the rollout passed its progress deadline."""
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            seconds = deployment.get("spec", {}).get("progressDeadlineSeconds", 600)
            message = condition.get("message") or "no progress"
            return f"ProgressDeadlineExceeded after {seconds} s: {message}"
    return None


def current_pods(deployment: dict[str, Any], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pods that run the Deployment's newest template (its containers' images), not a replaced one's."""

    def images(spec: dict[str, Any]) -> list[str]:
        return [c.get("image", "") for c in spec.get("containers") or []]

    newest = images(deployment.get("spec", {}).get("template", {}).get("spec", {}))
    return [p for p in pods if images(p.get("spec") or {}) == newest]


def failure(deployment: dict[str, Any], pods: list[dict[str, Any]]) -> str | None:
    """Why the Deployment's rollout will not complete: a fatal state of a pod of its newest
    template (a replaced template's pods do not count), else a passed deadline."""
    return pod_failure(current_pods(deployment, pods)) or deadline_exceeded(deployment)


def rollout_readiness(deployment: dict[str, Any] | None, pods: list[dict[str, Any]]) -> Readiness:
    """The readiness of a Deployment's rollout (None: there is no such Deployment: failed)."""
    if deployment is None:
        return Readiness(False, failed=True, reason="no canary Deployment is running")
    meta = deployment.get("metadata", {})
    name = f"Deployment {meta.get('namespace', '?')}/{meta.get('name', '?')}"
    why = failure(deployment, pods)
    if why is not None:
        return Readiness(False, failed=True, reason=f"{name}: {why}")
    status = deployment.get("status") or {}
    desired = int(deployment.get("spec", {}).get("replicas", 1))
    if not observed(deployment):
        seen = f"the controller has not yet seen generation {meta.get('generation')}"
        return Readiness(False, reason=f"{name}: {seen}")
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    total = int(status.get("replicas") or 0)
    if desired == 0:
        return Readiness(False, reason=f"{name} is scaled to 0 replicas")
    if updated < desired:
        return Readiness(False, reason=f"{name}: {updated} of {desired} replicas updated")
    if total > updated:
        return Readiness(False, reason=f"{name}: {total - updated} old replica(s) still running")
    if available < desired:
        return Readiness(False, reason=f"{name}: {available} of {desired} replicas available")
    return Readiness(True, reason=f"{name}: {desired} of {desired} replicas updated and available")


# -- what the driver's sync and async reads share (so the decisions exist once) ---------------


def match_labels(deployment: dict[str, Any]) -> dict[str, str]:
    """The labels of a Deployment's pods and ReplicaSets: its selector's."""
    return deployment.get("spec", {}).get("selector", {}).get("matchLabels") or {}


def track_pods(pods: list[dict[str, Any]], track: Track) -> list[dict[str, Any]]:
    """A track's pods among those its selector matched (the stable one may match canary pods)."""
    if track != STABLE:
        return pods
    return [p for p in pods if (p["metadata"].get("labels") or {}).get(TRACK_LABEL) != CANARY]


def require_stable(found: dict[str, Any] | None, namespace: str, name: str) -> dict[str, Any]:
    """The stable Deployment as read; a missing one raises (there is nothing to release beside)."""
    if found is None:
        raise PlatformError(
            f"get deployments/{name} in namespace {namespace}: not found "
            "(platform.deployment must name the Deployment that serves the service now)"
        )
    return found


def canary_readiness(canary: dict[str, Any] | None, pods: list[dict[str, Any]], name: str) -> Readiness:
    """The canary Deployment's readiness: failed at once when its image is known unpullable.

    ``name``: ``<namespace>/<canary Deployment>``, for the reason.
    """
    unpullable = (canary["metadata"].get("annotations") or {}).get(UNPULLABLE) if canary else None
    if unpullable:
        return Readiness(False, failed=True, reason=f"Deployment {name}: {unpullable}")
    return rollout_readiness(canary, pods)

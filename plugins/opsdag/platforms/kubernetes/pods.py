"""What the driver reads from pods and quotas, as pure functions: URLs, metric matchers, capacity."""

from __future__ import annotations

from typing import Any

from opsdag.platforms.kubernetes import manifests as mf

NO_QUOTA_CAPACITY = 1000  # instances, when no ResourceQuota limits the namespace's pods
POD_PART = "[a-z0-9]+"  # a ReplicaSet's pod-template-hash, or a pod's random suffix


def endpoint_urls(deployment: dict[str, Any], pods: list[dict[str, Any]], container: str | None) -> list[str]:
    """``http://<pod IP>:<port>`` of every ready pod (the service container's first port, else 80)."""
    index = mf.container_index(deployment, container)
    spec = deployment["spec"]["template"]["spec"]["containers"][index]
    port = next((p.get("containerPort") for p in spec.get("ports") or []), 80)
    urls = []
    for pod in pods:
        status = pod.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
        )
        if ready and status.get("podIP") and not pod["metadata"].get("deletionTimestamp"):
            urls.append(f"http://{status['podIP']}:{port}")
    return sorted(urls)


def current_pods(canary_pods: list[dict[str, Any]], image: str | None) -> list[dict[str, Any]]:
    """The pods running ``image`` (the canary Deployment's now), not being deleted; None: all."""
    return [
        p
        for p in canary_pods
        if not p["metadata"].get("deletionTimestamp")
        and (image is None or image in {c.get("image") for c in p.get("spec", {}).get("containers") or []})
    ]


def metric_selectors(
    namespace: str, deployment: str, canary_pods: list[dict[str, Any]], image: str | None = None
) -> dict[str, str]:
    """``namespace`` and ``pod`` matchers (Prometheus' kubernetes_sd pod labels) per track.

    PromQL regexes are anchored: ``checkout-<hash>-<suffix>`` never matches
    ``checkout-canary-<hash>-<suffix>``. The canary's names the pod-template-hash of its
    pods (those running ``image``, the canary Deployment's image, when given) when they
    share one, so series of an earlier canary never count for a new one: they stay within
    a query's rate window for minutes after its pods are gone.
    """
    hashes = {
        (p["metadata"].get("labels") or {}).get("pod-template-hash") for p in current_pods(canary_pods, image)
    }
    canary_hash = hashes.pop() if len(hashes) == 1 and None not in hashes else POD_PART
    return {
        "canary": f'namespace="{namespace}", pod=~"{mf.canary_name(deployment)}-{canary_hash}-{POD_PART}"',
        "stable": f'namespace="{namespace}", pod=~"{deployment}-{POD_PART}-{POD_PART}"',
    }


def capacity(quotas: list[dict[str, Any]], ours: int) -> tuple[int, str]:
    """Pods this service may run (the tightest quota on ``pods``, minus the pods others use) and why."""
    limits = []
    for quota in quotas:
        hard = (quota.get("status") or {}).get("hard") or quota.get("spec", {}).get("hard") or {}
        used = (quota.get("status") or {}).get("used") or {}
        if "pods" in hard:
            others = max(0, int(used.get("pods", 0)) - ours)
            limits.append((int(hard["pods"]) - others, quota["metadata"]["name"]))
    if not limits:
        return NO_QUOTA_CAPACITY, "no ResourceQuota limits pods in this namespace"
    most, name = min(limits)
    return most, f"ResourceQuota {name}"

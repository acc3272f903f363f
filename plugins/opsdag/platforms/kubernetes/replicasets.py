"""Rolling the stable Deployment in place, as pure functions over it, its ReplicaSets and pods (no I/O).

What :mod:`opsdag.platforms.kubernetes.rolling` reads and writes; see there for the design.
The first batch records on the Deployment (annotation ``ROLLING_FROM``) what it changes: the
revision that served, the rolling parameters and ``paused``; undo and promote put them back.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from opsdag.platforms.base import PlatformError, Readiness
from opsdag.platforms.kubernetes import manifests as mf
from opsdag.platforms.kubernetes import readiness as rd

ROLLING_FROM = "opsdag.io/rolling-from"  # annotation: what a native rolling release changed
REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
DEFAULT_DEADLINE = 600  # seconds: spec.progressDeadlineSeconds' default


def revision(obj: dict[str, Any]) -> int:
    """The ``deployment.kubernetes.io/revision`` of a Deployment or ReplicaSet (0: none)."""
    value = (obj.get("metadata", {}).get("annotations") or {}).get(REVISION) or "0"
    return int(value) if str(value).isdigit() else 0


def without_hash(template: dict[str, Any]) -> dict[str, Any]:
    """A ReplicaSet's pod template as its Deployment had it: without the ``pod-template-hash`` label."""
    template = copy.deepcopy(template)
    labels = template.get("metadata", {}).get("labels")
    if labels is not None:
        labels.pop(HASH_LABEL, None)
    return template


def owned(deployment: dict[str, Any], replicasets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Deployment's ReplicaSets (by owner uid, else by name prefix), oldest revision first."""
    meta = deployment["metadata"]
    uid, prefix = meta.get("uid"), f"{meta['name']}-"

    def ours(rs: dict[str, Any]) -> bool:
        owners = rs["metadata"].get("ownerReferences") or []
        if owners:
            return any(o.get("kind") == "Deployment" and o.get("uid") == uid for o in owners)
        rest = rs["metadata"]["name"][len(prefix) :]
        return rs["metadata"]["name"].startswith(prefix) and "-" not in rest

    return sorted((rs for rs in replicasets if ours(rs)), key=revision)


def split_replica_sets(
    deployment: dict[str, Any], replicasets: list[dict[str, Any]]
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """``(new, old)``: the ReplicaSet running the Deployment's template (None: not created yet), the rest."""
    template = deployment["spec"]["template"]
    new, old = None, []
    for rs in owned(deployment, replicasets):
        if new is None and without_hash(rs["spec"]["template"]) == template:
            new = rs
        else:
            old.append(rs)
    return new, old


def pods_of(rs: dict[str, Any] | None, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The live pods of a ReplicaSet (its ``pod-template-hash``)."""
    if rs is None:
        return []
    hashed = (rs["spec"]["template"].get("metadata", {}).get("labels") or {}).get(HASH_LABEL)
    return [
        p
        for p in pods
        if (p["metadata"].get("labels") or {}).get(HASH_LABEL) == hashed
        and not p["metadata"].get("deletionTimestamp")
    ]


def ready_count(pods: list[dict[str, Any]]) -> int:
    return sum(
        1
        for p in pods
        if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (p.get("status") or {}).get("conditions") or []
        )
    )


def recorded(deployment: dict[str, Any]) -> dict[str, Any] | None:
    """What the release's first batch recorded (None: no native rolling release is under way)."""
    raw = (deployment["metadata"].get("annotations") or {}).get(ROLLING_FROM)
    return json.loads(raw) if raw else None


def roll_patch(
    deployment: dict[str, Any], image: str, container: str | None, max_surge: int, max_unavailable: int
) -> dict[str, Any]:
    """The merge patch that starts (or continues) rolling ``deployment`` to ``image``.

    Records ``ROLLING_FROM`` the first time, sets the image (and the template's ``version``
    label if it has one), the rolling parameters, and unpauses. Guarded by ``resourceVersion``.
    """
    spec = deployment["spec"]
    strategy = {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": max_surge, "maxUnavailable": max_unavailable},
    }
    patch: dict[str, Any] = {"spec": {"paused": None, "strategy": strategy}}
    meta: dict[str, Any] = {}
    if recorded(deployment) is None:
        meta["annotations"] = {
            ROLLING_FROM: json.dumps(
                {
                    "revision": revision(deployment),
                    "image": mf.image_of(deployment, container),
                    "strategy": spec.get("strategy"),
                    "paused": spec.get("paused"),
                },
                sort_keys=True,
            )
        }
    if mf.image_of(deployment, container) != image:
        patch["spec"]["template"] = mf.image_patch(deployment, container, image)["spec"]["template"]
        labels = spec["template"].get("metadata", {}).get("labels") or {}
        if mf.VERSION_LABEL in labels:
            patch["spec"]["template"]["metadata"] = {"labels": {mf.VERSION_LABEL: mf.version_label(image)}}
    if deployment["metadata"].get("resourceVersion"):
        meta["resourceVersion"] = deployment["metadata"]["resourceVersion"]
    if meta:
        patch["metadata"] = meta
    return patch


def pause_patch(deployment: dict[str, Any]) -> dict[str, Any]:
    return _guarded(deployment, {"spec": {"paused": True}})


def merge_patch_to(current: Any, wanted: Any) -> Any:
    """The JSON merge patch that turns ``current`` into ``wanted`` exactly (lists replace whole)."""
    if not isinstance(current, dict) or not isinstance(wanted, dict):
        return copy.deepcopy(wanted)
    patch: dict[str, Any] = {}
    for key in current.keys() - wanted.keys():
        patch[key] = None
    for key, value in wanted.items():
        if key not in current:
            patch[key] = copy.deepcopy(value)
        elif current[key] != value:
            patch[key] = merge_patch_to(current[key], value)
    return patch


def restore_patch(
    deployment: dict[str, Any],
    record: dict[str, Any],
    template: dict[str, Any] | None,
    *,
    drop_record: bool = True,
) -> dict[str, Any]:
    """Back to what ``record`` says (``template``: the recorded revision's, None: promote keeps
    the new one): strategy, ``paused`` (so the controller rolls on), and no ``ROLLING_FROM``
    unless ``drop_record`` is false."""
    spec = deployment["spec"]
    wanted = {"strategy": record.get("strategy"), "paused": record.get("paused")}
    current = {"strategy": spec.get("strategy"), "paused": spec.get("paused")}
    if template is not None:
        wanted["template"], current["template"] = template, spec["template"]
    spec_patch = merge_patch_to(
        {k: v for k, v in current.items() if v is not None},
        {k: v for k, v in wanted.items() if v is not None},
    )
    patch: dict[str, Any] = {"spec": spec_patch}
    if drop_record:
        patch["metadata"] = {"annotations": {ROLLING_FROM: None}}
    return _guarded(deployment, patch)


def previous_template(
    deployment: dict[str, Any], replicasets: list[dict[str, Any]], record: dict[str, Any]
) -> dict[str, Any]:
    """The pod template of the revision ``record`` names, from its ReplicaSet; refused if it is gone."""
    wanted = int(record.get("revision") or 0)
    for rs in owned(deployment, replicasets):
        if revision(rs) == wanted:
            return without_hash(rs["spec"]["template"])
    name = deployment["metadata"]["name"]
    raise PlatformError(
        f"Deployment {name}: no ReplicaSet of revision {wanted} (the one serving before the release) "
        "is left to roll back to (spec.revisionHistoryLimit too low?); set its image back to "
        f"{record.get('image')} by hand"
    )


def batch_readiness(
    deployment: dict[str, Any],
    replicasets: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    *,
    image: str,
    container: str | None,
    updated: int,
    since: float,
    now: float,
) -> Readiness:
    """Whether the batch's ``updated`` new pods run ``image`` and are ready; failed for good when a
    new pod crashes or cannot pull, or the progress deadline passed (counted from ``since``)."""
    meta = deployment["metadata"]
    name = f"Deployment {meta.get('namespace', '?')}/{meta.get('name', '?')}"
    running = mf.image_of(deployment, container)
    if running != image:
        why = f"{name} runs {running}, not {image}: changed by someone else"
        return Readiness(False, failed=True, reason=why)
    new, old = split_replica_sets(deployment, replicasets)
    new_pods = pods_of(new, pods)
    why = rd.pod_failure(new_pods) or rd.deadline_exceeded(deployment)
    if why:
        return Readiness(False, failed=True, reason=f"{name}: {why}")
    ready = ready_count(new_pods)
    old_count = sum(len(pods_of(rs, pods)) for rs in old)
    counts = f"{ready} of {updated} new replica(s) ready, {old_count} old running"
    if new is not None and ready >= updated:
        return Readiness(True, reason=f"{name}: {counts}")
    deadline = int(deployment["spec"].get("progressDeadlineSeconds") or DEFAULT_DEADLINE)
    if now - since > deadline:
        return Readiness(
            False,
            failed=True,
            reason=f"{name}: ProgressDeadlineExceeded: {counts} {now - since:.0f} s after the batch started "
            f"(spec.progressDeadlineSeconds: {deadline})",
        )
    return Readiness(False, reason=f"{name}: {counts}")


def selectors(
    namespace: str, deployment: str, new: dict[str, Any] | None, old: list[dict[str, Any]]
) -> dict[str, str]:
    """``$canary``: the new ReplicaSet's pods; ``$stable``: the older ReplicaSets' (PromQL, anchored)."""
    from opsdag.platforms.kubernetes.pods import POD_PART

    def pattern(sets: list[dict[str, Any]]) -> str:
        hashes = sorted(
            {(rs["spec"]["template"].get("metadata", {}).get("labels") or {}).get(HASH_LABEL) for rs in sets}
            - {None}
        )
        return hashes[0] if len(hashes) == 1 else f"({'|'.join(hashes)})" if hashes else POD_PART

    return {
        "canary": f'namespace="{namespace}", pod=~"{deployment}-{pattern([new] if new else [])}-{POD_PART}"',
        "stable": f'namespace="{namespace}", pod=~"{deployment}-{pattern(old)}-{POD_PART}"',
    }


def _guarded(deployment: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    version = deployment["metadata"].get("resourceVersion")
    if version:
        patch.setdefault("metadata", {})["resourceVersion"] = version
    return patch

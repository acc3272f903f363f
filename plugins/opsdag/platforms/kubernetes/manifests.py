"""The objects a canary release adds to a namespace, derived from the stable ones (pure, no I/O).

The stable Deployment ``<deployment>`` is the user's and is only ever patched (its image, on
promote; its replicas). The canary is ``<deployment>-canary``: a copy of the stable Deployment
with the new image in ``platform.container`` (or the only container), whose pods carry
``track: canary`` and ``version: <tag>`` and whose selector includes ``track: canary``, so
that its ReplicaSets never adopt the stable pods. A router that routes to Services copies the
stable Service as ``<service>-canary`` selecting ``track: canary``. For the split to be the
router's, the stable Service must not select the canary's pods: its selector must hold a
label the canary's pods do not carry with that value (``track: stable``);
``selects_canary_pods`` says when it does not.

Blue-green's layout (``router: service-selector``) is two colours of one Deployment,
``<deployment>-blue`` / ``-green`` labelled ``opsdag.io/colour``: ``colour_deployment`` makes one
colour from the other, ``selector_patch`` moves a Service's selector between them.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from opsdag.platforms.base import PlatformError

TRACK_LABEL = "track"
VERSION_LABEL = "version"
CANARY_SUFFIX = "-canary"
MANAGED_BY = {"app.kubernetes.io/managed-by": "opsdag"}
CANARY_OF = "opsdag.io/canary-of"  # annotation: the stable Deployment / Service a canary copies
# A copy is built field by field (no uid, resourceVersion, managedFields...), minus the
# original's history:
_DROPPED_ANNOTATIONS = (
    "deployment.kubernetes.io/revision",
    "kubectl.kubernetes.io/last-applied-configuration",
)
_SERVICE_PORT_FIELDS = ("name", "port", "targetPort", "protocol", "appProtocol")
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.-]")


def canary_name(name: str) -> str:
    """``checkout`` -> ``checkout-canary`` (the canary Deployment or Service)."""
    return f"{name}{CANARY_SUFFIX}"


def version_label(image: str) -> str:
    """A label value naming the version of ``image``: its tag, else the digest's first 12 hex digits.

    ``registry.example.com/shop/checkout:1.4.2`` -> ``1.4.2``;
    ``...checkout@sha256:0123456789abcdef...`` -> ``sha256-0123456789ab``.
    """
    name, _, digest = image.partition("@")
    if digest:
        algorithm, _, hexdigits = digest.partition(":")
        value = f"{algorithm}-{hexdigits[:12]}"
    else:
        last = name.rsplit("/", 1)[-1]
        value = last.partition(":")[2] or "latest"
    value = _LABEL_VALUE.sub("-", value)[:63].strip("-_.")
    return value or "unknown"


def container_index(deployment: dict[str, Any], container: str | None) -> int:
    """Index of the container that runs the service's image (``platform.container``, or the only one)."""
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    name = _name(deployment)
    if container is None:
        if len(containers) != 1:
            names = ", ".join(c.get("name", "?") for c in containers) or "none"
            raise PlatformError(
                f"Deployment {name} has {len(containers)} containers ({names}): "
                "set platform.container to the one that runs the service's image"
            )
        return 0
    for index, item in enumerate(containers):
        if item.get("name") == container:
            return index
    names = ", ".join(c.get("name", "?") for c in containers) or "none"
    raise PlatformError(
        f"Deployment {name} has no container {container!r} (platform.container); it has: {names}"
    )


def image_of(deployment: dict[str, Any], container: str | None) -> str:
    """The image the Deployment's pod template runs in the service's container."""
    index = container_index(deployment, container)
    return deployment["spec"]["template"]["spec"]["containers"][index].get("image", "")


def image_patch(deployment: dict[str, Any], container: str | None, image: str) -> dict[str, Any]:
    """A JSON merge patch setting the service's container to ``image`` (the whole list: merge
    patches replace lists), guarded by the Deployment's ``resourceVersion`` when it has one."""
    index = container_index(deployment, container)
    containers = copy.deepcopy(deployment["spec"]["template"]["spec"]["containers"])
    containers[index]["image"] = image
    patch: dict[str, Any] = {"spec": {"template": {"spec": {"containers": containers}}}}
    version = deployment.get("metadata", {}).get("resourceVersion")
    if version:
        patch["metadata"] = {"resourceVersion": version}
    return patch


def canary_deployment(
    stable: dict[str, Any], *, image: str, replicas: int, container: str | None
) -> dict[str, Any]:
    """The ``<deployment>-canary`` Deployment: the stable one's spec with ``image``, ``replicas``
    and pods labelled ``track: canary`` / ``version: <tag>``, selected by ``track: canary`` too."""
    index = container_index(stable, container)
    meta = stable.get("metadata", {})
    version = version_label(image)
    spec = copy.deepcopy(stable.get("spec", {}))
    spec.pop("paused", None)
    spec["replicas"] = replicas
    selector = spec.setdefault("selector", {})
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}), TRACK_LABEL: "canary"}
    template = spec.setdefault("template", {})
    template_meta = template.setdefault("metadata", {})
    track = {TRACK_LABEL: "canary", VERSION_LABEL: version}
    template_meta["labels"] = {**(template_meta.get("labels") or {}), **track}
    template["spec"]["containers"][index]["image"] = image
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": canary_name(meta["name"]),
            "namespace": meta.get("namespace"),
            "labels": {**(meta.get("labels") or {}), **MANAGED_BY, **track},
            "annotations": {
                **_kept_annotations(meta),
                CANARY_OF: meta["name"],
            },
        },
        "spec": spec,
    }


def canary_service(stable: dict[str, Any]) -> dict[str, Any]:
    """``<service>-canary``: the stable Service's ports, selecting the canary's pods only."""
    meta = stable.get("metadata", {})
    spec = stable.get("spec", {})
    ports = []
    for port in spec.get("ports") or []:
        ports.append({k: v for k, v in port.items() if k in _SERVICE_PORT_FIELDS})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": canary_name(meta["name"]),
            "namespace": meta.get("namespace"),
            "labels": {**(meta.get("labels") or {}), **MANAGED_BY, TRACK_LABEL: "canary"},
            "annotations": {CANARY_OF: meta["name"]},
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {**(spec.get("selector") or {}), TRACK_LABEL: "canary"},
            "ports": ports,
        },
    }


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether ``labels`` carry every ``key: value`` of an equality selector."""
    return all(labels.get(key) == value for key, value in selector.items())


def selects_canary_pods(service: dict[str, Any], canary_pod_labels: dict[str, str]) -> bool:
    """Whether the stable Service would also send traffic to the canary's pods."""
    selector = service.get("spec", {}).get("selector") or {}
    return bool(selector) and matches(selector, canary_pod_labels)


def canary_pod_labels(stable: dict[str, Any], image: str = "") -> dict[str, str]:
    """The labels the canary's pods carry (the stable template's, with ``track`` and ``version``)."""
    labels = stable.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {}
    return {**labels, TRACK_LABEL: "canary", VERSION_LABEL: version_label(image) if image else "any"}


def selector_string(selector: dict[str, str]) -> str:
    """``{"app": "checkout", "track": "canary"}`` -> ``app=checkout,track=canary`` (a labelSelector)."""
    return ",".join(f"{key}={value}" for key, value in sorted(selector.items()))


def _name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{meta.get('namespace', '?')}/{meta.get('name', '?')}"


def _kept_annotations(meta: dict[str, Any]) -> dict[str, str]:
    annotations = meta.get("annotations") or {}
    return {k: v for k, v in annotations.items() if k not in _DROPPED_ANNOTATIONS}


# -- blue-green: two colours of one Deployment ---------------------------------------------------

COLOUR_LABEL = "opsdag.io/colour"  # on a colour's Deployment, its selector and its pods
COLOURS = ("blue", "green")


def colour_name(base: str, colour: str) -> str:
    """``checkout``, ``green`` -> ``checkout-green`` (a colour's Deployment)."""
    return f"{base}-{colour}"


def other_colour(colour: str) -> str:
    """``blue`` -> ``green`` and back."""
    return COLOURS[1 - COLOURS.index(colour)]


def colour_of(obj: dict[str, Any], where: str) -> str | None:
    """The colour a Deployment's pods carry (``where="template"``) or a Service selects (``"selector"``)."""
    spec = obj.get("spec", {})
    labels = (
        spec.get("selector") or {}
        if where == "selector"
        else spec.get("template", {}).get("metadata", {}).get("labels") or {}
    )
    colour = labels.get(COLOUR_LABEL)
    return colour if colour in COLOURS else None


def colour_deployment(
    stable: dict[str, Any], *, base: str, colour: str, image: str, replicas: int, container: str | None
) -> dict[str, Any]:
    """``<base>-<colour>``: the stable colour's Deployment with ``image`` and ``replicas``, whose
    selector, pods and labels carry ``opsdag.io/colour: <colour>`` and pods ``version: <tag>``."""
    index = container_index(stable, container)
    meta = stable.get("metadata", {})
    spec = copy.deepcopy(stable.get("spec", {}))
    spec.pop("paused", None)
    spec["replicas"] = replicas
    selector = spec.setdefault("selector", {})
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}), COLOUR_LABEL: colour}
    template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
    pod_labels = {COLOUR_LABEL: colour, VERSION_LABEL: version_label(image)}
    template_meta["labels"] = {**(template_meta.get("labels") or {}), **pod_labels}
    spec["template"]["spec"]["containers"][index]["image"] = image
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": colour_name(base, colour),
            "namespace": meta.get("namespace"),
            "labels": {**(meta.get("labels") or {}), **MANAGED_BY, COLOUR_LABEL: colour},
            "annotations": _kept_annotations(meta),
        },
        "spec": spec,
    }


def selector_patch(service: dict[str, Any], colour: str) -> dict[str, Any] | None:
    """A merge patch making ``service`` select ``colour`` (None: it does already), guarded by its
    ``resourceVersion`` when it has one: the selector's other labels are kept."""
    if colour_of(service, "selector") == colour:
        return None
    patch: dict[str, Any] = {"spec": {"selector": {COLOUR_LABEL: colour}}}
    version = service.get("metadata", {}).get("resourceVersion")
    if version:
        patch["metadata"] = {"resourceVersion": version}
    return patch


__all__ = [
    "CANARY_OF",
    "COLOURS",
    "COLOUR_LABEL",
    "TRACK_LABEL",
    "VERSION_LABEL",
    "canary_deployment",
    "canary_name",
    "canary_pod_labels",
    "canary_service",
    "colour_deployment",
    "colour_name",
    "colour_of",
    "container_index",
    "image_of",
    "image_patch",
    "matches",
    "other_colour",
    "selector_patch",
    "selector_string",
    "selects_canary_pods",
    "version_label",
]

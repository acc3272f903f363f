"""The in-cluster build pod's manifest (Kaniko-compatible executor), as a pure function.

``build_pod_manifest(build, settings)`` turns plain inputs into a ``v1`` Pod dict, the
executor's arguments as a list (no shell anywhere), after refusing any value that is
not what it claims to be. Nothing here talks to a cluster; ``kaniko_builder`` creates,
watches and deletes the pod.

Choices, and why:

- **The executor image is a required setting**, never a default: the original Kaniko
  repository was archived in June 2025 and maintained forks exist; the operator of the
  platform picks one (any image whose entrypoint takes Kaniko's flags).
- **The context is a URL the executor fetches itself**: ``git://host/repo.git#ref``
  (optionally ``#ref#commit``), ``s3://bucket/path.tar.gz`` or ``gs://bucket/path.tar.gz``,
  with ``context_sub_path`` for the directory inside it (Kaniko's ``--context-sub-path``,
  e.g. the spec's repository-relative ``build.context``). Or ``dir:///workspace/...``
  together with ``context_claim``: a PersistentVolumeClaim that already holds the context,
  mounted read-only at ``/workspace``. No upload from the worker: that would need the
  pod's ``exec``/``attach`` and a second transport to test. A URL carrying credentials
  (``user:pass@``) is refused: secrets never go on a command line; credentials for a
  private context belong in the executor's environment (not handled here).
- **One name per run**: ``pod_name(service, run_id)`` is ``build-<service>-<hash>``
  where the hash is of the run id, so a retry of the same run finds the same pod. The
  labels carry the service and that run hash (label values cannot hold a run id's ``:``
  and ``+``); the exact run id is an annotation, and so is the hash of the arguments
  (``opsdag.io/build-spec``) so that a pod of the same name building something else is
  never adopted.
- **The digest comes back in the termination message**: ``--digest-file=/dev/termination-log``
  with ``terminationMessagePolicy: File``; the pod never restarts (``restartPolicy: Never``)
  and the cluster itself kills it after ``activeDeadlineSeconds`` (the build timeout),
  even when no worker is watching any more.
- **Arguments are ``--flag=value`` tokens**: a value starting with ``-`` can never be read
  as a flag, and each token says which flag it belongs to. Build arguments are visible in
  the pod's spec: they must not carry secrets (as with ``docker build --build-arg``).
- **Registry credentials** come from a Kubernetes secret named in the settings (a
  ``kubernetes.io/dockerconfigjson`` secret: its ``.dockerconfigjson`` key is mounted as
  ``/kaniko/.docker/config.json``); without one, the registry must accept anonymous pushes.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

MANAGED_BY = "opsdag"
COMPONENT = "image-build"
CONTAINER = "build"
DIGEST_FILE = "/dev/termination-log"
DOCKER_CONFIG_DIR = "/kaniko/.docker"
WORKSPACE = "/workspace"

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_SERVICE = "opsdag.io/service"
LABEL_RUN = "opsdag.io/run"
ANNOTATION_RUN_ID = "opsdag.io/run-id"
ANNOTATION_SPEC = "opsdag.io/build-spec"

CONTEXT_SCHEMES = ("git", "s3", "gs", "dir")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# distribution/reference's grammar: [domain[:port]/]path-component(/path-component)*:tag
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_BUILD_ARG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_STAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")
_LABEL_KEY = re.compile(r"^[a-z0-9]([a-z0-9._/-]*[a-z0-9])?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BuildPodError(ValueError):
    """An input the build pod cannot be made from; the message names the field and the value."""


@dataclass(frozen=True)
class KanikoSettings:
    """How the platform runs build pods (one per Airflow deployment or per service).

    - ``executor_image``: the Kaniko-compatible executor image (required; e.g. a maintained fork).
    - ``namespace``: where build pods run.
    - ``registry_secret``: a ``kubernetes.io/dockerconfigjson`` secret with the push
      credentials, mounted at ``/kaniko/.docker/config.json``; ``None``: anonymous pushes.
    - ``registry_secret_key``: the key of that secret holding the config (``.dockerconfigjson``).
    - ``service_account``: the pod's service account (``None``: the namespace's default).
    - ``cpu_request`` / ``memory_request`` / ``memory_limit``: the build container's resources.
    - ``timeout_seconds``: the pod's ``activeDeadlineSeconds``; the builder waits as long.
    - ``cache_repo``: Kaniko's ``--cache-repo`` when the cache is on (``None``: its default).
    """

    executor_image: str
    namespace: str = "default"
    registry_secret: str | None = None
    registry_secret_key: str = ".dockerconfigjson"
    service_account: str | None = None
    cpu_request: str = "500m"
    memory_request: str = "1Gi"
    memory_limit: str | None = "4Gi"
    timeout_seconds: int = 1800
    cache_repo: str | None = None


@dataclass(frozen=True)
class KanikoBuild:
    """One image build, from plain values (the spec and the run conf resolved by the caller).

    - ``service``: the service's name (a DNS label); in the pod's name and labels.
    - ``run_id``: the Airflow run the build belongs to; the same run finds the same pod.
    - ``context``: the context URL (``git://``, ``s3://``, ``gs://``, or ``dir://`` with ``context_claim``).
    - ``destinations``: ``repository:tag`` references to push; the first names the result.
    - ``dockerfile``: the Dockerfile, relative to the context (``--dockerfile``).
    - ``context_sub_path``: a directory inside the context (``--context-sub-path``).
    - ``context_claim``: a PersistentVolumeClaim holding a ``dir://`` context, mounted at ``/workspace``.
    - ``build_args``: ``--build-arg=NAME=VALUE`` each (visible in the pod spec: no secrets).
    - ``target``: the stage of a multi-stage Dockerfile (``--target``).
    - ``cache``: ``--cache=true`` or ``--cache=false``.
    - ``labels``: ``--label=KEY=VALUE`` each (the OCI labels; fixed per run so a retry adopts the pod).
    """

    service: str
    run_id: str
    context: str
    destinations: tuple[str, ...]
    dockerfile: str = "Dockerfile"
    context_sub_path: str | None = None
    context_claim: str | None = None
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    cache: bool = False
    labels: dict[str, str] = field(default_factory=dict)


def run_hash(run_id: str) -> str:
    """A short stable hash of a run id: a valid label value and pod-name suffix."""
    return hashlib.sha256(run_id.encode()).hexdigest()[:12]


def pod_name(service: str, run_id: str) -> str:
    """The build pod's name for this service and run: ``build-<service>-<run hash>`` (<= 63)."""
    _check_dns_label("service", service)
    if not run_id or _CONTROL.search(run_id):
        raise BuildPodError(f"run_id: {run_id!r} is empty or has control characters")
    suffix = run_hash(run_id)
    head = f"build-{service}"[: 63 - len(suffix) - 1].rstrip("-")
    return f"{head}-{suffix}"


def split_reference(reference: str) -> tuple[str, str]:
    """``registry/repo:tag`` -> (``registry/repo``, ``tag``); refuses anything else, naming it."""
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon <= slash:
        raise BuildPodError(f"destinations: {reference!r} has no tag (expected repository:tag)")
    repository, tag = reference[:colon], reference[colon + 1 :]
    if "@" in reference:
        raise BuildPodError(f"destinations: {reference!r} is a digest reference; push to a tag")
    if not _REPOSITORY.match(repository) or len(repository) > 255:
        raise BuildPodError(f"destinations: {reference!r}: {repository!r} is not a valid repository")
    if not _TAG.match(tag):
        raise BuildPodError(f"destinations: {reference!r}: {tag!r} is not a valid tag")
    return repository, tag


def executor_args(build: KanikoBuild, settings: KanikoSettings) -> list[str]:
    """The executor's arguments for ``build``, each a ``--flag=value`` token, after validation."""
    _check_context(build)
    if not build.destinations:
        raise BuildPodError("destinations: at least one repository:tag is needed")
    for reference in build.destinations:
        split_reference(reference)
    args = [f"--context={build.context}", f"--dockerfile={_relative_path('dockerfile', build.dockerfile)}"]
    if build.context_sub_path is not None:
        args.append(f"--context-sub-path={_relative_path('context_sub_path', build.context_sub_path)}")
    args += [f"--destination={reference}" for reference in build.destinations]
    for name, value in sorted(build.build_args.items()):
        if not _BUILD_ARG_NAME.match(name):
            raise BuildPodError(f"build_args: {name!r} is not a valid ARG name ([A-Za-z_][A-Za-z0-9_]*)")
        if not isinstance(value, str) or _CONTROL.search(value):
            raise BuildPodError(f"build_args: {name}: the value must be text without control characters")
        args.append(f"--build-arg={name}={value}")
    if build.target is not None:
        if not _STAGE.match(build.target):
            raise BuildPodError(f"target: {build.target!r} is not a valid stage name")
        args.append(f"--target={build.target}")
    for key, value in sorted(build.labels.items()):
        if not _LABEL_KEY.match(key) or not isinstance(value, str) or _CONTROL.search(value):
            raise BuildPodError(
                f"labels: {key!r}: a label key is [a-z0-9.-/], its value text without control characters"
            )
        args.append(f"--label={key}={value}")
    args.append(f"--cache={'true' if build.cache else 'false'}")
    if build.cache and settings.cache_repo is not None:
        if not _REPOSITORY.match(settings.cache_repo):
            raise BuildPodError(f"cache_repo: {settings.cache_repo!r} is not a valid repository")
        args.append(f"--cache-repo={settings.cache_repo}")
    args.append(f"--digest-file={DIGEST_FILE}")
    return args


def build_pod_manifest(build: KanikoBuild, settings: KanikoSettings) -> dict[str, Any]:
    """The ``v1`` Pod that runs ``build`` with ``settings``; raises BuildPodError on a bad input."""
    _check_settings(settings)
    args = executor_args(build, settings)
    name = pod_name(build.service, build.run_id)
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if settings.registry_secret is not None:
        volumes.append(
            {
                "name": "docker-config",
                "secret": {
                    "secretName": settings.registry_secret,
                    "items": [{"key": settings.registry_secret_key, "path": "config.json"}],
                },
            }
        )
        mounts.append({"name": "docker-config", "mountPath": DOCKER_CONFIG_DIR, "readOnly": True})
    if build.context_claim is not None:
        volumes.append(
            {"name": "context", "persistentVolumeClaim": {"claimName": build.context_claim, "readOnly": True}}
        )
        mounts.append({"name": "context", "mountPath": WORKSPACE, "readOnly": True})
    resources: dict[str, Any] = {"requests": {"cpu": settings.cpu_request, "memory": settings.memory_request}}
    if settings.memory_limit is not None:
        resources["limits"] = {"memory": settings.memory_limit}
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": settings.executor_image,
        "args": args,
        "terminationMessagePath": DIGEST_FILE,
        "terminationMessagePolicy": "File",
        "resources": resources,
    }
    if mounts:
        container["volumeMounts"] = mounts
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": settings.timeout_seconds,
        "automountServiceAccountToken": False,
        "containers": [container],
    }
    if settings.service_account is not None:
        spec["serviceAccountName"] = settings.service_account
    if volumes:
        spec["volumes"] = volumes
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": {
                LABEL_MANAGED_BY: MANAGED_BY,
                LABEL_COMPONENT: COMPONENT,
                LABEL_SERVICE: build.service,
                LABEL_RUN: run_hash(build.run_id),
            },
            "annotations": {
                ANNOTATION_RUN_ID: build.run_id,
                ANNOTATION_SPEC: spec_hash(settings.executor_image, args),
            },
        },
        "spec": spec,
    }


def spec_hash(executor_image: str, args: list[str]) -> str:
    """The hash of what a build pod does (image and arguments): a pod is adopted only if equal."""
    return hashlib.sha256(json.dumps([executor_image, args]).encode()).hexdigest()[:32]


def _check_settings(settings: KanikoSettings) -> None:
    if (
        not settings.executor_image
        or _CONTROL.search(settings.executor_image)
        or " " in settings.executor_image
    ):
        raise BuildPodError(
            f"executor_image: {settings.executor_image!r}: set the Kaniko-compatible executor image "
            "(the original Kaniko repository is archived; pick a maintained fork)"
        )
    _check_dns_label("namespace", settings.namespace)
    for label, value in (
        ("registry_secret", settings.registry_secret),
        ("service_account", settings.service_account),
    ):
        if value is not None and (not _DNS_SUBDOMAIN.match(value) or len(value) > 253):
            raise BuildPodError(f"{label}: {value!r} is not a valid Kubernetes object name")
    if not re.match(r"^[-._a-zA-Z0-9]+$", settings.registry_secret_key):
        raise BuildPodError(
            f"registry_secret_key: {settings.registry_secret_key!r} is not a valid secret key"
        )
    for label, value in (
        ("cpu_request", settings.cpu_request),
        ("memory_request", settings.memory_request),
        ("memory_limit", settings.memory_limit),
    ):
        if value is not None and not _QUANTITY.match(value):
            raise BuildPodError(f"{label}: {value!r} is not a Kubernetes quantity (e.g. 500m, 1Gi)")
    if (
        isinstance(settings.timeout_seconds, bool)
        or not isinstance(settings.timeout_seconds, int)
        or settings.timeout_seconds <= 0
    ):
        raise BuildPodError(f"timeout_seconds: {settings.timeout_seconds!r} must be a positive integer")


def _check_dns_label(label: str, value: str) -> None:
    if not isinstance(value, str) or not _DNS_LABEL.match(value) or len(value) > 63:
        raise BuildPodError(f"{label}: {value!r} is not a DNS label (lowercase letters, digits, '-'; <= 63)")


def _check_context(build: KanikoBuild) -> None:
    context = build.context
    if not isinstance(context, str) or _CONTROL.search(context) or " " in context:
        raise BuildPodError(f"context: {context!r} is not a URL")
    parts = urlsplit(context)
    if parts.scheme not in CONTEXT_SCHEMES:
        raise BuildPodError(
            f"context: {context!r}: the scheme must be one of "
            + ", ".join(f"{scheme}://" for scheme in CONTEXT_SCHEMES)
        )
    if "@" in parts.netloc:
        raise BuildPodError(
            f"context: {parts.scheme}://...: credentials in the URL are refused (no secrets "
            "on a command line)"
        )
    if parts.scheme == "dir":
        path = context[len("dir://") :]
        inside = path == WORKSPACE or path.startswith(WORKSPACE + "/")
        if build.context_claim is None or not inside or ".." in path.split("/"):
            raise BuildPodError(
                f"context: {context!r}: a dir:// context must be under {WORKSPACE} and come with "
                "context_claim (the PersistentVolumeClaim holding it)"
            )
    elif not parts.netloc:
        raise BuildPodError(f"context: {context!r} names no host or bucket")
    if build.context_claim is not None:
        if parts.scheme != "dir":
            raise BuildPodError("context_claim: only a dir:// context is read from a claim")
        if not _DNS_SUBDOMAIN.match(build.context_claim) or len(build.context_claim) > 253:
            raise BuildPodError(f"context_claim: {build.context_claim!r} is not a valid claim name")


def _relative_path(label: str, value: str) -> str:
    if (
        not isinstance(value, str)
        or not value
        or value.startswith("/")
        or "\\" in value
        or _CONTROL.search(value)
        or ".." in value.split("/")
    ):
        raise BuildPodError(f"{label}: {value!r} must be a relative path inside the context (no '..')")
    return value

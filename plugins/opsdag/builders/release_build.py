"""A release's build: the spec's builder, the image pushed, the digest the platform deploys.

One result for both builders (``ReleaseBuild``), so that the release, its report and its
messages never ask which builder ran. The request names the version (``repo:<version>``):
it becomes the pushed tag and the ``org.opencontainers.image.version`` label; the release
then deploys ``<spec repository>@sha256:<digest>``, never the mutable tag.

**Where a build pushes**: the platform says (``WorkloadDriver.push_repository``). A real
platform pulls from the repository's own registry, so it pushes there; the sandbox's
``registry.opsdag.local`` is served by a registry on a loopback port. The digest is the
same name for the same image in both places (it is a hash of the manifest).

**The docker builder** reads the engine's address from its connection's extra
``docker_url`` (the docker provider takes the address as an operator argument, not from
the connection; opsdag keeps both in one place), else ``$DOCKER_HOST``, else the local
socket. A connection that does not exist means no registry login, if it is the default
``docker_default``; a connection the spec names that does not exist is an error.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsdag.builders.docker_builder import BuildFailed, oci_labels
from opsdag.builders.kaniko_pod import KanikoBuild, KanikoSettings

if TYPE_CHECKING:
    from opsdag.builders.kaniko_builder import KanikoBuilder, KanikoBuildResult
    from opsdag.spec.image import ImageBuild

DEFAULT_DOCKER_CONN = "docker_default"
WORKSPACE_CONTEXT = "dir:///workspace"


@dataclass(frozen=True)
class ReleaseBuild:
    """What a release built: ``image`` is what the platform runs (``repository@sha256:...``)."""

    image: str
    digest: str
    builder: str
    version: str
    pushed_to: str  # the repository the builder pushed to (the platform's registry address)
    labels: dict[str, str] = field(default_factory=dict)
    build_seconds: float = 0.0
    cached: bool = False  # not rebuilt: the same context was already pushed
    detail: str = ""  # where it was built: the context and its hash, or the build pod

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def version_of(image: str) -> str:
    """The tag of ``repo:tag`` (a build pushes a tag; the request refused digests already)."""
    _, sep, tag = image.rpartition(":")
    if not sep or "/" in tag or "@" in image:
        raise ValueError(f"image: {image!r} names no tag to build as")
    return tag


def source_revision(root: Path) -> str | None:
    """The commit ``root`` is checked out at (the ``org.opencontainers.image.revision`` label)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--verify", "-q", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    revision = out.stdout.strip()
    return revision if out.returncode == 0 and len(revision) == 40 else None


def docker_engine_settings(conn_id: str) -> tuple[str | None, str | None]:
    """(the connection to log in with or None, the engine's address or None) for ``conn_id``."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        if conn_id == DEFAULT_DOCKER_CONN:
            return None, None
        raise BuildFailed(
            f"image.build.docker_conn_id: the Airflow connection {conn_id!r} does not exist"
        ) from None
    url = (conn.extra_dejson or {}).get("docker_url")
    return (conn_id if conn.login else None), (str(url) if url else None)


def docker_build(
    build: ImageBuild,
    *,
    repository: str,
    push_repository: str,
    version: str,
    root: Path,
    logger: logging.Logger,
) -> ReleaseBuild:
    """Build ``build``'s context with the Docker engine, push it to ``push_repository``, check it."""
    from opsdag.builders.context import resolve_context
    from opsdag.builders.docker_builder import DockerEngineBuilder

    context = resolve_context(build, root)
    conn_id, docker_url = docker_engine_settings(build.docker_conn_id)
    builder = DockerEngineBuilder(docker_conn_id=conn_id, docker_url=docker_url)
    built = builder.build(
        context,
        repository=push_repository,
        version=version,
        revision=source_revision(root),
        source=build.source,
        logger=logger,
    )
    return ReleaseBuild(
        image=f"{repository}@{built.digest}",
        digest=built.digest,
        builder="docker",
        version=version,
        pushed_to=push_repository,
        labels=dict(built.labels),
        build_seconds=built.build_seconds,
        cached=built.cached,
        detail=f"context {context.relative_directory} (hash {built.context_hash[:12]})",
    )


def kaniko_build(
    build: ImageBuild,
    *,
    service: str,
    run_id: str,
    push_repository: str,
    version: str,
    created: datetime,
    root: Path,
) -> tuple[KanikoBuilder, KanikoBuild]:
    """The builder and the build pod's inputs; the labels are fixed per run so a retry adopts its pod."""
    from opsdag.builders.kaniko_builder import KanikoBuilder

    kaniko = build.kaniko
    if kaniko is None:  # the spec refuses this; kept for a spec made in code
        raise BuildFailed("image.build.kaniko: the kaniko builder needs its settings")
    settings = KanikoSettings(
        executor_image=kaniko.executor_image,
        namespace=kaniko.namespace,
        registry_secret=kaniko.registry_secret,
        service_account=kaniko.service_account,
        timeout_seconds=int(kaniko.timeout.total_seconds()),
    )
    labels = oci_labels(version=version, created=created, revision=source_revision(root), source=build.source)
    pod_build = KanikoBuild(
        service=service,
        run_id=run_id,
        context=kaniko.git_url or WORKSPACE_CONTEXT,
        context_claim=kaniko.context_claim,
        context_sub_path=None if build.context == "." else build.context,
        destinations=(f"{push_repository}:{version}",),
        dockerfile=build.dockerfile,
        build_args=dict(build.build_args),
        target=build.target,
        cache=kaniko.cache,
        labels=labels,
    )
    return KanikoBuilder(settings=settings, kubernetes_conn_id=kaniko.kubernetes_conn_id), pod_build


def kaniko_release_build(
    result: KanikoBuildResult, pod_build: KanikoBuild, *, repository: str, version: str
) -> ReleaseBuild:
    return ReleaseBuild(
        image=f"{repository}@{result.digest}",
        digest=result.digest,
        builder="kaniko",
        version=version,
        pushed_to=pod_build.destinations[0].rpartition(":")[0],
        labels=dict(pod_build.labels),
        build_seconds=result.seconds,
        cached=False,
        detail=f"build pod {result.namespace}/{result.pod_name}" + (" (adopted)" if result.adopted else ""),
    )

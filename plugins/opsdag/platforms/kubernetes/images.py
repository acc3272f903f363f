"""Whether the cluster can pull an image: the image's registry is asked (HTTP API v2).

Kubernetes itself only finds out when a kubelet tries (``ErrImagePull``), after the
release has started; asking the registry first refuses a mistyped tag before anything
changes. The login is the Airflow connection ``conn_id`` (a ``docker`` connection) when
its host is the image's registry; otherwise, or when the connection does not exist, the
registry is asked anonymously (a private registry then answers 401: refused, with its words).
"""

from __future__ import annotations

from opsdag.builders.registry import DOCKER_HUB, RegistryClient, RegistryError, parse_repository
from opsdag.platforms.base import ImageResolution


def split_reference(image: str) -> tuple[str, str]:
    """``(repository, tag or digest)``: ``reg/app:1.2`` -> ``(reg/app, 1.2)``; no tag: ``latest``."""
    if "@" in image:
        repository, _, digest = image.partition("@")
        return repository, digest
    head, _, last = image.rpartition("/")
    name, _, tag = last.partition(":")
    return (f"{head}/{name}" if head else name), tag or "latest"


def resolve(image: str, conn_id: str | None) -> ImageResolution:
    """The image as the registry holds it (its digest), or why it cannot be pulled."""
    repository, reference = split_reference(image)
    registry, name = parse_repository(repository)
    username, password = _login(registry, conn_id)
    try:
        with RegistryClient(registry, username=username, password=password, timeout=10) as client:
            digest = client.manifest_digest(name, reference)
    except RegistryError as error:
        return ImageResolution(
            image, pullable=False, reason=f"{image}: cannot be confirmed pullable: {error}"
        )
    if digest is None:
        what = f"digest {reference}" if reference.startswith("sha256:") else f"tag {reference}"
        return ImageResolution(
            image, pullable=False, reason=f"{image}: registry {registry} has no {what} of {name}"
        )
    return ImageResolution(image, pullable=True, reason="", digest=digest)


def _login(registry: str, conn_id: str | None) -> tuple[str | None, str | None]:
    if not conn_id:
        return None, None
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None, None
    host = f"{conn.host}:{conn.port}" if conn.port else (conn.host or "")
    host = host.split("://")[-1].split("/")[0]
    if host == registry or (registry == DOCKER_HUB and host in ("docker.io", "index.docker.io", DOCKER_HUB)):
        return conn.login, conn.password
    return None, None

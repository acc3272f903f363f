"""Build, label and push a service's image with a Docker engine; the result is a digest.

``DockerEngineBuilder(...).build(context, repository=..., version=...)`` is the whole job
of a release's build step with ``image.build.builder: docker``:

1. **Cache.** The context's content hash (``opsdag.builders.context``: its files, the
   Dockerfile, build args, target, and the version label) names a tag ``ctx-<hash>``. When
   the registry already has that tag, nothing is built: the log says ``not rebuilt: ...
   already pushed as ...``, the requested tags are pointed at that manifest through the
   registry API, and its digest is the result (``cached=True``). The ``created`` and
   ``revision`` labels are those of the build that pushed it. A failed look-up (registry
   unreachable, refused) is logged and the build goes on: the push then fails with the
   engine's own words.
2. **Build** through the docker provider's ``DockerHook`` (connection ``docker_default``:
   the registry login; ``docker_url``: the engine), docker-py's low-level
   ``APIClient.build(..., decode=True, rm=True)``. Each line the engine streams goes to the
   logger as it arrives. An ``errorDetail``/``error`` line is the build's failure (docker-py
   raises nothing for it): ``BuildFailed`` with the engine's text. The OCI labels
   ``org.opencontainers.image.version``, ``.created``, ``.revision`` and ``.source`` are
   set on the image (the last two when given).
3. **Push** every requested tag, then ``ctx-<hash>`` last (so the cache tag exists only for
   an image fully pushed), reading each push's digest from its final
   ``{"aux": {"Tag", "Digest", "Size"}}`` line; ``errorDetail`` lines fail it.
4. **Check** the digest against the registry's ``Docker-Content-Digest`` for the tag
   (``HEAD /v2/<name>/manifests/ctx-<hash>``): a release then deploys
   ``repository@sha256:...`` and never a mutable tag.

The engine's streams are read by ``opsdag.builders.engine_stream``.

Errors: ``BuildFailed`` (a failed build step, push or check: the engine's or registry's
own text), ``EngineUnreachable`` (no engine at ``docker_url``), and
``opsdag.builders.context.BuildContextError`` before anything is built. Running it twice
is safe: the second run finds the cache tag (a run that died between the pushes has no
cache tag yet and builds again, from the engine's layer cache). Two builds of the same
context at the same moment are not expected (a service's release DAG runs one at a time);
if they raced, the check could see the other's push under the cache tag and fail rather
than return a digest it did not verify.

The build runs in the calling process for its whole length (streaming the log); a
deferrable build (a trigger following the engine) is for the release step to decide.

Airflow is imported when the engine is first used (``DockerHook``), not at import time.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from opsdag.builders.context import BuildContext
from opsdag.builders.engine_stream import BuildFailed, engine_lines, read_build_stream, read_push_stream
from opsdag.builders.registry import DOCKER_HUB, RegistryClient, RegistryError, parse_repository

LABEL_PREFIX = "org.opencontainers.image."
VERSION_LABEL = LABEL_PREFIX + "version"
CACHE_TAG_PREFIX = "ctx-"
DEFAULT_DOCKER_URL = "unix://var/run/docker.sock"
_HUB_NAMES = {"docker.io", "index.docker.io", DOCKER_HUB}  # what a connection may call Docker Hub
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
log = logging.getLogger(__name__)


class EngineUnreachable(BuildFailed):
    """No Docker engine answers at the given address."""


@dataclass(frozen=True)
class BuiltImage:
    """What a build produced: deploy ``reference`` (``repository@sha256:...``)."""

    reference: str
    repository: str
    digest: str
    tags: tuple[str, ...]
    labels: dict[str, str]
    context_hash: str
    build_seconds: float  # wall time of the whole call: look-up, build, push, check
    pushed: bool  # this call pushed the image (False when it was found in the registry)
    cached: bool  # not rebuilt: the context's hash tag was already in the registry
    cache_tag: str = field(default="")

    def to_dict(self) -> dict[str, Any]:
        """A small JSON-able dict (an XCom, a report's build section)."""
        return {**asdict(self), "tags": list(self.tags)}


def oci_labels(
    *, version: str, created: datetime, revision: str | None = None, source: str | None = None
) -> dict[str, str]:
    """The OCI annotations opsdag puts on an image (``revision``/``source`` only when known)."""
    labels = {VERSION_LABEL: version, LABEL_PREFIX + "created": created.astimezone(UTC).isoformat()}
    if revision:
        labels[LABEL_PREFIX + "revision"] = revision
    if source:
        labels[LABEL_PREFIX + "source"] = source
    return labels


def cache_tag(context_hash: str) -> str:
    return CACHE_TAG_PREFIX + context_hash


def check_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """The tags, each checked against Docker's tag grammar (``ValueError`` naming the bad one)."""
    checked = tuple(dict.fromkeys(tags))
    for tag in checked:
        if not _TAG.match(tag):
            raise ValueError(f"tags: {tag!r} is not a Docker tag (letters, digits, _ . -, at most 128)")
        if tag.startswith(CACHE_TAG_PREFIX):
            raise ValueError(f"tags: {tag!r}: tags starting with {CACHE_TAG_PREFIX!r} are opsdag's own")
    return checked


class DockerEngineBuilder:
    """Builds and pushes images with one Docker engine (see the module's docstring).

    :param docker_conn_id: Airflow connection with the registry login (host, login,
        password), as the docker provider reads it; ``None``: no login (an open registry).
    :param docker_url: the engine's address (default ``$DOCKER_HOST``, else the local socket).
    :param timeout: seconds the engine may stay silent during one API call (a build step).
    :param registry_scheme: ``http``/``https`` for the registry API; default: http on loopback.
    """

    def __init__(
        self,
        *,
        docker_conn_id: str | None = "docker_default",
        docker_url: str | None = None,
        timeout: int = 900,
        registry_scheme: str | None = None,
    ) -> None:
        self.docker_conn_id = docker_conn_id
        self.docker_url = docker_url or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_URL
        self.timeout = timeout
        self.registry_scheme = registry_scheme

    @cached_property
    def hook(self):
        from airflow.providers.docker.hooks.docker import DockerHook

        return DockerHook(docker_conn_id=self.docker_conn_id, base_url=self.docker_url, timeout=self.timeout)

    @cached_property
    def api_client(self):
        """docker-py's ``APIClient`` of the hook (logged in to the connection's registry)."""
        from docker.errors import APIError, DockerException

        try:
            return self.hook.api_client
        except APIError as error:  # the login to the registry refused
            reason = error.explanation or error
            raise BuildFailed(f"docker login through connection {self.docker_conn_id!r}: {reason}") from error
        except Exception as error:
            reason = str(error)
            try:  # the hook logs the reason and raises a generic error: ask once more for the words
                import docker

                docker.APIClient(base_url=self.docker_url, timeout=5).ping()
            except DockerException as probe:
                reason = str(probe)
            raise EngineUnreachable(
                f"the Docker engine at {self.docker_url} cannot be reached: {reason} "
                "(set docker_url or DOCKER_HOST to a running engine)"
            ) from error

    def registry(self, registry: str) -> RegistryClient:
        """A registry API client, with the connection's credentials when it names that registry."""
        username = password = None
        if self.docker_conn_id:
            from airflow.sdk import BaseHook

            conn = BaseHook.get_connection(self.docker_conn_id)
            host = f"{conn.host}:{conn.port}" if conn.port else (conn.host or "")
            host = host.split("://")[-1].split("/")[0]
            if host == registry or (registry == DOCKER_HUB and host in _HUB_NAMES):
                username, password = conn.login, conn.password
        return RegistryClient(registry, username=username, password=password, scheme=self.registry_scheme)

    def build(
        self,
        context: BuildContext,
        *,
        repository: str,
        version: str,
        tags: Sequence[str] | None = None,
        revision: str | None = None,
        source: str | None = None,
        logger: logging.Logger | None = None,
    ) -> BuiltImage:
        """Build ``context`` as ``repository`` (or find it built), push it, check its digest.

        :param context: from ``opsdag.builders.context.resolve_context`` (checked paths).
        :param repository: the image repository, e.g. ``registry.example.com/shop/checkout``.
        :param version: the ``org.opencontainers.image.version`` label (part of the cache key).
        :param tags: tags to push besides the cache tag; default ``[version]``.
        :param revision: the source revision (``org.opencontainers.image.revision``), if known.
        :param source: the source repository URL (``org.opencontainers.image.source``), if known.
        :param logger: where the engine's lines go (an operator passes ``self.log``).
        """
        logger = logger or log
        started = time.monotonic()
        wanted = check_tags([version] if tags is None else tags)
        content_hash = context.context_hash({VERSION_LABEL: version})
        ctx_tag = cache_tag(content_hash)
        registry_host, name = parse_repository(repository)
        with self.registry(registry_host) as registry:
            try:
                found = registry.manifest_digest(name, ctx_tag)
            except RegistryError as error:
                logger.warning("cache look-up of %s:%s failed, building: %s", repository, ctx_tag, error)
                found = None
            if found:
                where = f"context {context.relative_directory} (hash {content_hash[:12]})"
                logger.info("not rebuilt: %s already pushed as %s:%s (%s)", where, repository, ctx_tag, found)
                try:
                    labels = self._reuse(registry, repository, name, found, wanted, logger)
                except RegistryError as error:
                    raise BuildFailed(f"{repository}@{found} (not rebuilt): {error}") from error
                return self._result(repository, found, wanted, labels, content_hash, started, pushed=False)
            labels = oci_labels(version=version, created=datetime.now(UTC), revision=revision, source=source)
            digest = self._build_and_push(context, repository, wanted, ctx_tag, labels, logger)
            try:
                in_registry = registry.manifest_digest(name, ctx_tag)
            except RegistryError as error:
                raise BuildFailed(
                    f"pushed {repository}@{digest}, but the registry check failed: {error}"
                ) from error
        if in_registry != digest:
            raise BuildFailed(
                f"the registry's digest of {repository}:{ctx_tag} is {in_registry}, the push said {digest}"
            )
        logger.info("pushed %s@%s (tags %s)", repository, digest, ", ".join([*wanted, ctx_tag]))
        return self._result(repository, digest, wanted, labels, content_hash, started, pushed=True)

    @staticmethod
    def _reuse(registry, repository, name, digest, tags, logger) -> dict[str, str]:
        """Point ``tags`` at the image found in the registry; its labels."""
        for tag in tags:
            if registry.manifest_digest(name, tag) != digest:
                registry.tag_manifest(name, digest, tag)
                logger.info("tagged %s:%s -> %s", repository, tag, digest)
        return registry.image_labels(name, digest)

    def _build_and_push(
        self,
        context: BuildContext,
        repository: str,
        tags: tuple[str, ...],
        ctx_tag: str,
        labels: dict[str, str],
        logger: logging.Logger,
    ) -> str:
        from docker.errors import APIError
        from requests.exceptions import RequestException

        client = self.api_client
        where = f"{context.relative_directory} ({context.dockerfile_for_engine})"
        logger.info("building %s from %s", repository, where)
        try:
            image_id = read_build_stream(
                engine_lines(
                    client.build(
                        path=str(context.directory),
                        dockerfile=context.dockerfile_for_engine,
                        tag=f"{repository}:{ctx_tag}",
                        buildargs=context.build_args or None,
                        target=context.target,
                        labels=labels,
                        decode=True,
                        rm=True,
                        forcerm=True,
                    )
                ),
                logger,
            )
            for tag in tags:
                client.tag(image_id, repository, tag=tag, force=True)
            digests = {}
            for tag in (*tags, ctx_tag):  # the cache tag last: it marks a complete push
                digests[tag] = read_push_stream(
                    engine_lines(client.push(repository, tag=tag, stream=True, decode=True)), logger
                )
        except APIError as error:
            raise BuildFailed(str(error.explanation or error)) from error
        except RequestException as error:
            raise BuildFailed(f"the Docker engine at {self.docker_url}: {error}") from error
        if len(set(digests.values())) != 1:
            raise BuildFailed(f"the tags of one image were pushed with different digests: {digests}")
        return digests[ctx_tag]

    @staticmethod
    def _result(repository, digest, tags, labels, content_hash, started, *, pushed) -> BuiltImage:
        return BuiltImage(
            reference=f"{repository}@{digest}",
            repository=repository,
            digest=digest,
            tags=tags,
            labels=labels,
            context_hash=content_hash,
            build_seconds=round(time.monotonic() - started, 3),
            pushed=pushed,
            cached=not pushed,
            cache_tag=cache_tag(content_hash),
        )

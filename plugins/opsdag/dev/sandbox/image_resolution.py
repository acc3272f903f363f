"""What an image reference runs in the sandbox: a declared demo-app version, or why it cannot be pulled.

- ``repo:<tag>``: the tag must be declared in ``include/sandbox/versions.yaml``
  (``VersionCatalog.resolve``; the repository part is not checked).
- ``repo@sha256:<hex>`` with a digest declared there (a version's ``digest`` field): that version.
- any other ``repo@sha256:<hex>``: the sandbox "pulls" it from its registry
  (``image_registry``): the registry must hold that manifest, and the image's config must
  carry an ``org.opencontainers.image.version`` label naming a declared version, whose faults
  the processes then get. ``repo`` must be served by the sandbox's registry: the repository
  host of versions.yaml (``registry.opsdag.local``) or the registry's own ``127.0.0.1:<port>``.

Anything else is a ``VersionLookup`` without a version and with the reason in words, e.g.
``image registry.opsdag.local/demo-api@sha256:... cannot be pulled: the sandbox registry
has no manifest sha256:... in demo-api``. The registry is asked each time (no cache): a
deploy by digest happens a few times per release, and the answer must be today's.
"""

from __future__ import annotations

import re

from opsdag.builders.docker_builder import VERSION_LABEL
from opsdag.builders.registry import RegistryError, parse_repository
from opsdag.dev.sandbox.image_registry import sandbox_registry
from opsdag.dev.sandbox.state import Layout, SandboxError
from opsdag.dev.sandbox.versions import VersionCatalog, VersionLookup, split_image

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def resolve_image(layout: Layout, catalog: VersionCatalog, image: str) -> VersionLookup:
    """The declared version ``image`` runs in the sandbox of ``layout``, or why it cannot be pulled."""
    repository, _, digest = split_image(image)
    if digest is None or catalog.by_digest(digest) is not None:
        return catalog.resolve(image)

    def refused(why: str) -> VersionLookup:
        return VersionLookup(image, None, f"image {image} cannot be pulled: {why}", digest=digest)

    if not _DIGEST.match(digest):
        return refused(f"{digest!r} is not a digest (expected sha256:<64 hex digits>)")
    try:
        registry = sandbox_registry(layout)
    except SandboxError as error:
        return refused(str(error))
    host, name = parse_repository(repository)
    served = served_hosts(catalog, registry.host)
    if host not in served:
        return refused(f"the sandbox pulls only from {' and '.join(served)} (its registry), not from {host}")
    try:
        with registry.client(timeout=10) as client:
            if not client.has_digest(name, digest):
                return refused(f"the sandbox registry has no manifest {digest} in {name}")
            labels = client.image_labels(name, digest)
    except RegistryError as error:
        return refused(f"the sandbox registry at {registry.host}: {error}")
    return catalog.resolve_label(image, digest, VERSION_LABEL, labels.get(VERSION_LABEL))


def served_hosts(catalog: VersionCatalog, registry_host: str) -> list[str]:
    """The registry hosts the sandbox's registry answers for: versions.yaml's, and its own address."""
    return list(dict.fromkeys([parse_repository(catalog.repository)[0], registry_host]))


def push_repository(layout: Layout, catalog: VersionCatalog, repository: str) -> str:
    """Where a build pushes the images the sandbox pulls as ``repository``:
    ``registry.opsdag.local/demo-api`` -> ``127.0.0.1:<port>/demo-api``.

    ``SandboxError`` (a ``PlatformError``) when the registry is not running, or when the
    sandbox would never pull from ``repository``'s registry.
    """
    registry = sandbox_registry(layout)
    host, name = parse_repository(repository)
    served = served_hosts(catalog, registry.host)
    if host not in served or "@" in repository or ":" in repository.rsplit("/", 1)[-1]:
        raise SandboxError(
            f"cannot push {repository!r} for the sandbox: it pulls images only from "
            f"{' and '.join(f'{h}/<name>' for h in served)} (a repository without tag or digest)"
        )
    return f"{registry.host}/{name}"

"""The build context of a service's image: where it is, what is in it, and its content hash.

``resolve_context(build, repository_root)`` turns a spec's ``image.build`` into a
``BuildContext`` the builders use, after checking it against the files:

- ``image.build.context`` must be a directory inside the repository and
  ``image.build.dockerfile`` a file inside the repository, also once every symlink on
  the way is resolved (a context that is a link to ``/etc`` is refused like ``..``);
  absolute paths and ``..`` are refused here too (the spec refuses them first), so a
  ``BuildContext`` never names anything outside the repository. Each error names the
  field: ``image.build.context: ...``.
- Symlinks *inside* the context are not followed: the engine sends them as links (so
  does docker-py's tar of the context), and they are hashed as links (their target text).

The **content hash** (``context_hash``) says "this image was built from exactly this":
sha256 over every entry the engine receives (the ``.dockerignore`` rules applied the way
docker-py applies them), each as its path, its kind (file, directory, link), its
permission bits and the sha256 of its bytes (or the link's target); then the
Dockerfile's bytes, the build args (sorted) and the target stage, and the extra
``identity`` items a builder adds (the docker builder adds the image's version label).
Modification times, owners and the order a directory lists its files in are left out,
so a fresh checkout of the same commit hashes the same. The builders push the image
under the tag ``ctx-<hash>`` and look that tag up before building (see
``opsdag.builders.docker_builder``).

Nothing here imports Airflow or talks to an engine: unit-tested on temporary directories.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

HASH_VERSION = "ctx-v1"  # part of the hash: a change of what is hashed never reuses an old tag


class BuildContextError(ValueError):
    """The build context or Dockerfile is unusable; the message starts with the spec field."""


@dataclass(frozen=True)
class BuildContext:
    """A checked build context: absolute paths inside the repository, and what to build."""

    repository_root: Path
    directory: Path  # the context directory (resolved)
    dockerfile: Path  # the Dockerfile (resolved; inside the repository, maybe outside the context)
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None

    @property
    def dockerfile_for_engine(self) -> str:
        """The ``dockerfile`` argument of docker-py's ``build``: relative to the context when
        the Dockerfile is inside it, else its absolute path (docker-py then sends its text)."""
        try:
            return self.dockerfile.relative_to(self.directory).as_posix()
        except ValueError:
            return str(self.dockerfile)

    @property
    def relative_directory(self) -> str:
        return self.directory.relative_to(self.repository_root).as_posix() or "."

    def context_hash(self, identity: Mapping[str, str] | None = None) -> str:
        """The content hash (64 hex digits); ``identity``: more items that make the image what
        it is (e.g. its version label), hashed with the files."""
        return context_hash(self.directory, self.dockerfile, self.build_args, self.target, identity or {})


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _relative_path(field_name: str, value: str) -> None:
    if not value or os.path.isabs(value) or value.startswith("\\"):
        raise BuildContextError(f"{field_name}: {value!r} must be a relative path inside the repository")
    if ".." in value.replace("\\", "/").split("/"):
        raise BuildContextError(
            f"{field_name}: {value!r} must stay inside the repository: '..' is not allowed"
        )


def resolve_context(build, repository_root: str | os.PathLike[str]) -> BuildContext:
    """Check ``build`` (an ``ImageBuild`` spec, or anything with ``context``, ``dockerfile``,
    ``build_args`` and ``target``) against the files under ``repository_root``."""
    root = Path(repository_root).resolve(strict=True)
    _relative_path("image.build.context", build.context)
    _relative_path("image.build.dockerfile", build.dockerfile)
    directory = (root / build.context).resolve()
    if not _inside(directory, root):
        raise BuildContextError(
            f"image.build.context: {build.context!r} resolves to {directory}, outside the repository "
            f"{root} (through a symlink): the context must stay inside the repository"
        )
    if not directory.is_dir():
        raise BuildContextError(
            f"image.build.context: {build.context!r} is not a directory in the repository {root}"
        )
    dockerfile = (directory / build.dockerfile).resolve()
    if not _inside(dockerfile, root):
        raise BuildContextError(
            f"image.build.dockerfile: {build.dockerfile!r} resolves to {dockerfile}, outside the "
            f"repository {root} (through a symlink): the Dockerfile must stay inside the repository"
        )
    if not dockerfile.is_file():
        raise BuildContextError(
            f"image.build.dockerfile: there is no file {build.dockerfile!r} in the context "
            f"{build.context!r} ({directory / build.dockerfile})"
        )
    return BuildContext(
        repository_root=root,
        directory=directory,
        dockerfile=dockerfile,
        build_args=dict(getattr(build, "build_args", None) or {}),
        target=getattr(build, "target", None),
    )


def dockerignore_patterns(directory: Path) -> list[str]:
    """The ``.dockerignore`` patterns of ``directory``, read as docker-py reads them."""
    path = directory / ".dockerignore"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def context_entries(directory: Path, dockerfile: str = "Dockerfile") -> list[str]:
    """The paths (relative, '/'-separated, sorted) the engine receives from ``directory``:
    docker-py's own ``exclude_paths`` with the ``.dockerignore`` rules."""
    from docker.utils.build import exclude_paths  # docker-py: a pure function of the tree

    paths = exclude_paths(str(directory), dockerignore_patterns(directory), dockerfile=dockerfile)
    return sorted(Path(p).as_posix() for p in paths)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _entry(directory: Path, relative: str) -> list[str]:
    path = directory / relative
    info = path.lstat()
    mode = f"{stat.S_IMODE(info.st_mode):04o}"
    if stat.S_ISLNK(info.st_mode):
        return [relative, "link", mode, os.readlink(path)]
    if stat.S_ISDIR(info.st_mode):
        return [relative, "dir", mode, ""]
    if stat.S_ISREG(info.st_mode):
        return [relative, "file", mode, _file_sha256(path)]
    return [relative, "other", mode, ""]  # sockets, fifos: the engine skips them, so does the hash


def context_hash(
    directory: Path,
    dockerfile: Path,
    build_args: Mapping[str, str],
    target: str | None,
    identity: Mapping[str, str],
) -> str:
    """sha256 (hex) of the context's entries, the Dockerfile, the build args, the target and
    ``identity`` (see the module's docstring); independent of mtimes and listing order."""
    try:
        in_context = dockerfile.relative_to(directory).as_posix()
    except ValueError:
        in_context = None
    digest = hashlib.sha256()
    digest.update(HASH_VERSION.encode() + b"\n")
    for relative in context_entries(directory, in_context or "Dockerfile"):
        digest.update(json.dumps(_entry(directory, relative)).encode() + b"\n")
    digest.update(b"dockerfile\n" + _file_sha256(dockerfile).encode() + b"\n")
    digest.update(json.dumps(sorted(build_args.items())).encode() + b"\n")
    digest.update(json.dumps(target).encode() + b"\n")
    digest.update(json.dumps(sorted(identity.items())).encode() + b"\n")
    return digest.hexdigest()

"""The demo app's versions, read from ``include/sandbox/versions.yaml``.

An image reference resolves to a version only if its tag (or digest) is declared there,
or, for a digest, if the image the sandbox's registry holds under it carries a declared
version in its ``org.opencontainers.image.version`` label (``image_resolution``, which
calls ``resolve_label`` here). Anything else behaves like an image that cannot be pulled,
which is how the sandbox reproduces a bad image reference for real.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from opsdag import paths

VERSIONS_FILE = "sandbox/versions.yaml"
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class VersionsFileError(ValueError):
    """``versions.yaml`` is missing or malformed; the message names the file and field."""


@dataclass(frozen=True)
class AppVersion:
    """One declared tag of the demo app and the faults its processes carry."""

    tag: str
    error_rate: float = 0.0
    extra_latency_ms: int = 0
    crash_on_start: bool = False
    fault_after_s: float = 0.0
    description: str = ""
    digest: str | None = None

    def app_args(self) -> list[str]:
        """Command-line flags that give a demo-app process this version's faults."""
        args = ["--version", self.tag]
        if self.error_rate:
            args += ["--error-rate", repr(self.error_rate)]
        if self.extra_latency_ms:
            args += ["--extra-latency-ms", str(self.extra_latency_ms)]
        if self.crash_on_start:
            args.append("--crash-on-start")
        if self.fault_after_s:
            args += ["--fault-after-s", repr(self.fault_after_s)]
        return args


@dataclass(frozen=True)
class VersionLookup:
    """What an image reference means in the sandbox: a version, or why it cannot be pulled."""

    image: str
    version: AppVersion | None
    reason: str = ""
    digest: str | None = None  # the reference's digest (``repo@sha256:...``), if it has one


@dataclass(frozen=True)
class VersionCatalog:
    """All declared versions plus the service identity and the initial stable version."""

    service: str
    repository: str
    initial_stable: str
    versions: Mapping[str, AppVersion] = field(default_factory=dict)
    source: Path | None = None

    def get(self, tag: str) -> AppVersion | None:
        return self.versions.get(tag)

    def image_for(self, tag: str) -> str:
        return f"{self.repository}:{tag}"

    def by_digest(self, digest: str) -> AppVersion | None:
        """The version declaring ``digest`` (its optional ``digest`` field), if any."""
        return next((v for v in self.versions.values() if v.digest == digest), None)

    def resolve_label(self, image: str, digest: str, label: str, value: str | None) -> VersionLookup:
        """The version an image's version ``label`` (read from a registry) names, or why not."""
        version = self.versions.get(value) if value else None
        if version is not None:
            return VersionLookup(image, version, digest=digest)
        source = self._source_name()
        if not value:
            why = f"its config has no {label} label to say which version of {self.service} it is"
        else:
            why = f"its label {label}={value} is not a version declared in {source}"
        return VersionLookup(image, None, f"image {image} cannot be pulled: {why}", digest=digest)

    def resolve(self, image: str) -> VersionLookup:
        """Map an image reference to a declared version, or explain why it cannot be pulled.

        Only the tag after the last ``:`` counts (the repository part is not checked, as a
        registry mirror may rename it); ``repo@sha256:<hex>`` resolves through a version's
        optional ``digest`` field.
        """
        source = self._source_name()
        repo, tag, digest = split_image(image)
        if digest is not None:
            version = self.by_digest(digest)
            if version is not None:
                return VersionLookup(image, version, digest=digest)
            return VersionLookup(
                image,
                None,
                f"image {image} cannot be pulled: digest {digest} is not declared in {source}",
                digest=digest,
            )
        if tag is None:
            return VersionLookup(
                image, None, f"image {image} cannot be pulled: it has no tag (expected {repo}:<tag>)"
            )
        version = self.versions.get(tag)
        if version is None:
            return VersionLookup(
                image,
                None,
                f"image {image} cannot be pulled: tag {tag} is not declared in {source}",
            )
        return VersionLookup(image, version)

    def _source_name(self) -> str:
        if self.source is None:
            return f"include/{VERSIONS_FILE}"
        try:
            return str(self.source.relative_to(paths.project_root()))
        except ValueError:
            return str(self.source)


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """Split ``repo[:tag]`` or ``repo@digest`` into (repository, tag, digest).

    A ``:`` followed later by ``/`` is a registry port, not a tag separator.
    """
    if "@" in image:
        repo, _, digest = image.partition("@")
        return repo, None, digest
    head, sep, tail = image.rpartition(":")
    if not sep or "/" in tail:
        return image, None, None
    return head, tail, None


def versions_path() -> Path:
    return paths.include_dir() / VERSIONS_FILE


def load_versions(path: Path | None = None) -> VersionCatalog:
    """Read and validate the versions file (default: ``<include>/sandbox/versions.yaml``)."""
    path = path or versions_path()
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise VersionsFileError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise VersionsFileError(f"{path}: not valid YAML: {exc}") from exc
    return parse_versions(raw, source=path)


def parse_versions(raw: Any, source: Path | None = None) -> VersionCatalog:
    where = str(source) if source else "versions"
    if not isinstance(raw, dict):
        raise VersionsFileError(f"{where}: expected a mapping at the top level")
    entries = raw.get("versions")
    if not isinstance(entries, dict) or not entries:
        raise VersionsFileError(f"{where}: versions: expected a non-empty mapping of tag -> faults")
    versions: dict[str, AppVersion] = {}
    for tag, spec in entries.items():
        tag = str(tag)
        versions[tag] = _parse_version(tag, spec or {}, f"{where}: versions.{tag}")
    for key in ("service", "repository", "initial_stable"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise VersionsFileError(f"{where}: {key}: expected a non-empty string")
    initial = raw["initial_stable"]
    if initial not in versions:
        raise VersionsFileError(f"{where}: initial_stable: tag {initial!r} is not declared in versions")
    if versions[initial].crash_on_start:
        raise VersionsFileError(f"{where}: initial_stable: tag {initial!r} crashes on start")
    return VersionCatalog(
        service=raw["service"],
        repository=raw["repository"],
        initial_stable=initial,
        versions=versions,
        source=source,
    )


def _parse_version(tag: str, spec: Any, where: str) -> AppVersion:
    if not _TAG_RE.match(tag):
        raise VersionsFileError(f"{where}: not a valid image tag")
    if not isinstance(spec, dict):
        raise VersionsFileError(f"{where}: expected a mapping of faults")
    known = {"error_rate", "extra_latency_ms", "crash_on_start", "fault_after_s", "description", "digest"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise VersionsFileError(f"{where}: unknown field(s) {', '.join(unknown)}")
    error_rate = spec.get("error_rate", 0.0)
    if not isinstance(error_rate, (int, float)) or isinstance(error_rate, bool) or not 0 <= error_rate <= 1:
        raise VersionsFileError(f"{where}.error_rate: expected a number between 0 and 1")
    latency = spec.get("extra_latency_ms", 0)
    if not isinstance(latency, int) or isinstance(latency, bool) or latency < 0:
        raise VersionsFileError(f"{where}.extra_latency_ms: expected a non-negative integer")
    crash = spec.get("crash_on_start", False)
    if not isinstance(crash, bool):
        raise VersionsFileError(f"{where}.crash_on_start: expected true or false")
    after = spec.get("fault_after_s", 0)
    if not isinstance(after, (int, float)) or isinstance(after, bool) or after < 0:
        raise VersionsFileError(f"{where}.fault_after_s: expected a non-negative number of seconds")
    digest = spec.get("digest")
    if digest is not None and (not isinstance(digest, str) or not _DIGEST_RE.match(digest)):
        raise VersionsFileError(f"{where}.digest: expected sha256:<64 hex digits>")
    return AppVersion(
        tag=tag,
        error_rate=float(error_rate),
        extra_latency_ms=latency,
        crash_on_start=crash,
        fault_after_s=float(after),
        description=str(spec.get("description", "")),
        digest=digest,
    )

"""A small client of the registry HTTP API v2 (the OCI distribution API), with httpx.

What opsdag asks a registry, and nothing more:

- ``manifest_digest(name, tag)``: the digest a tag points to (``HEAD /v2/<name>/manifests/<tag>``,
  its ``Docker-Content-Digest`` header), or ``None`` when the registry has no such tag;
- ``has_digest(name, digest)``: does the registry hold this manifest ("can it be pulled");
- ``image_config(name, reference)`` and ``image_labels(name, reference)``: the image's
  config blob and its labels (``org.opencontainers.image.version`` says which version an
  image is, for the sandbox's deploy-by-digest);
- ``tag_manifest(name, digest, tag)``: point another tag at an existing manifest (the
  same bytes PUT under the tag: no pull, no push of layers).

``parse_repository("127.0.0.1:5000/team/app")`` splits an image repository into its
registry host and the repository name in that registry, with Docker's rules (the first
component is a registry when it has a ``.`` or ``:`` or is ``localhost``; otherwise
Docker Hub, ``library/`` for a one-component name).

Plain HTTP is used for loopback registries (``127.0.0.0/8``, ``localhost``, ``::1``),
which Docker itself treats as insecure registries by default; HTTPS for every other
unless ``scheme`` says otherwise. Credentials (``username``/``password``, e.g. from the
``docker_default`` connection) answer the registry's challenge: ``Basic`` (htpasswd
registries) or ``Bearer`` (a token from the realm the registry names, per scope).

Errors: ``RegistryUnreachable`` when nothing answers, ``RegistryError`` for any other
answer than the expected one, with the status and the registry's own error text.
No Airflow imports: used by the builders, the sandbox and the tests alike.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from typing import Any

import httpx

MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[2:]
DOCKER_HUB = "registry-1.docker.io"
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(RuntimeError):
    """The registry answered something else than what was asked for (status and its text)."""


class RegistryUnreachable(RegistryError):
    """Nothing answered at the registry's address."""


def parse_repository(repository: str) -> tuple[str, str]:
    """``(registry host[:port], name)`` of an image repository (no tag, no digest)."""
    first, _, rest = repository.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return DOCKER_HUB, repository if rest else f"library/{repository}"


def is_loopback(host: str) -> bool:
    """Is ``host`` (``name[:port]`` or ``[v6]:port``) a loopback address (plain HTTP by default)."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _error_text(response: httpx.Response) -> str:
    """The registry's own words: its ``errors`` list (code: message) or the body."""
    try:
        errors = response.json().get("errors") or []
        text = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
    except (ValueError, AttributeError):
        text = response.text.strip()[:300]
    return f"HTTP {response.status_code}" + (f" {text}" if text else "")


class RegistryClient:
    """One registry (``host[:port]``): manifests, configs and labels of its images."""

    def __init__(
        self,
        registry: str,
        *,
        username: str | None = None,
        password: str | None = None,
        scheme: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.registry = registry
        self.scheme = scheme or ("http" if is_loopback(registry) else "https")
        self.base_url = f"{self.scheme}://{registry}"
        self._basic = (username, password or "") if username else None
        self._tokens: dict[str, str] = {}
        self._client = httpx.Client(timeout=timeout, follow_redirects=True)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what opsdag asks ----------------------------------------------------------------------

    def manifest_digest(self, name: str, reference: str) -> str | None:
        """The ``Docker-Content-Digest`` of ``name:reference`` (a tag or a digest); ``None`` if
        the registry does not have it."""
        response = self._request("HEAD", name, f"/v2/{name}/manifests/{reference}", accept=MANIFEST_TYPES)
        if response.status_code == 404:
            return None
        self._expect(response, 200, f"HEAD manifest {name}:{reference}")
        digest = response.headers.get("Docker-Content-Digest")
        if not digest:
            raise RegistryError(f"{self.registry}: manifest {name}:{reference} has no Docker-Content-Digest")
        return digest

    def has_digest(self, name: str, digest: str) -> bool:
        """Does the registry hold the manifest ``name@digest``."""
        return self.manifest_digest(name, digest) is not None

    def manifest(self, name: str, reference: str) -> tuple[bytes, str, str]:
        """The manifest's bytes, media type and digest, exactly as stored."""
        response = self._request("GET", name, f"/v2/{name}/manifests/{reference}", accept=MANIFEST_TYPES)
        self._expect(response, 200, f"GET manifest {name}:{reference}")
        media_type = response.headers.get("Content-Type", "").split(";")[0]
        return response.content, media_type, response.headers.get("Docker-Content-Digest", "")

    def image_config(self, name: str, reference: str, platform: str = "linux/amd64") -> dict[str, Any]:
        """The image config (JSON) of ``name:reference``; of ``platform`` for a multi-platform index."""
        body, media_type, _ = self.manifest(name, reference)
        manifest = json.loads(body)
        if media_type in INDEX_TYPES or "manifests" in manifest:
            wanted = dict(zip(("os", "architecture"), platform.split("/"), strict=False))
            for entry in manifest.get("manifests", []):
                if all(entry.get("platform", {}).get(k) == v for k, v in wanted.items()):
                    return self.image_config(name, entry["digest"], platform)
            raise RegistryError(f"{self.registry}: {name}:{reference} has no image for {platform}")
        config_digest = manifest["config"]["digest"]
        response = self._request("GET", name, f"/v2/{name}/blobs/{config_digest}")
        self._expect(response, 200, f"GET config blob {name}@{config_digest}")
        return response.json()

    def image_labels(self, name: str, reference: str) -> dict[str, str]:
        """The labels of ``name:reference`` (its config's ``config.Labels``; ``{}`` for none)."""
        return dict((self.image_config(name, reference).get("config") or {}).get("Labels") or {})

    def tag_manifest(self, name: str, digest: str, tag: str) -> str:
        """Point ``name:tag`` at the manifest ``name@digest`` (PUT of the same bytes); the digest."""
        body, media_type, _ = self.manifest(name, digest)
        response = self._request(
            "PUT", name, f"/v2/{name}/manifests/{tag}", content=body, content_type=media_type, push=True
        )
        self._expect(response, 201, f"PUT manifest {name}:{tag}")
        written = response.headers.get("Docker-Content-Digest", digest)
        if written != digest:
            raise RegistryError(f"{self.registry}: {name}:{tag} was stored as {written}, not {digest}")
        return written

    # -- HTTP and authentication ------------------------------------------------------------------

    def _expect(self, response: httpx.Response, status: int, what: str) -> None:
        if response.status_code != status:
            raise RegistryError(f"{self.registry}: {what}: {_error_text(response)}")

    def _request(
        self,
        method: str,
        name: str,
        path: str,
        *,
        accept: tuple[str, ...] = (),
        content: bytes | None = None,
        content_type: str | None = None,
        push: bool = False,
    ) -> httpx.Response:
        scope = f"repository:{name}:{'pull,push' if push else 'pull'}"
        headers = {"Accept": ", ".join(accept)} if accept else {}
        if content_type:
            headers["Content-Type"] = content_type
        for attempt in range(2):
            if scope in self._tokens:
                headers["Authorization"] = self._tokens[scope]
            try:
                url = self.base_url + path
                response = self._client.request(method, url, headers=headers, content=content)
            except httpx.TransportError as error:
                raise RegistryUnreachable(
                    f"the registry {self.registry} cannot be reached at {self.base_url}: {error}"
                ) from error
            if response.status_code != 401 or attempt:
                return response
            self._tokens[scope] = self._answer_challenge(response, scope)
        return response

    def _answer_challenge(self, response: httpx.Response, scope: str) -> str:
        """The ``Authorization`` header that answers the registry's ``WWW-Authenticate``."""
        challenge = response.headers.get("WWW-Authenticate", "")
        kind = challenge.split(" ", 1)[0].lower()
        if kind == "basic":
            if not self._basic:
                raise RegistryError(f"{self.registry}: the registry asks for credentials and none were given")
            return "Basic " + base64.b64encode(":".join(self._basic).encode()).decode()
        if kind != "bearer":
            raise RegistryError(f"{self.registry}: unsupported authentication challenge {challenge!r}")
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        query = {"scope": scope, **({"service": params["service"]} if "service" in params else {})}
        try:
            answer = self._client.get(params["realm"], params=query, auth=self._basic)
        except (KeyError, httpx.TransportError) as error:
            raise RegistryUnreachable(f"{self.registry}: token service of {challenge!r}: {error}") from error
        if answer.status_code != 200:
            raise RegistryError(f"{self.registry}: token for {scope}: {_error_text(answer)}")
        token = answer.json().get("token") or answer.json().get("access_token")
        return f"Bearer {token}"

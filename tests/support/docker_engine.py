"""A real Docker engine and a real registry on this machine, for tests and benchmarks.

Both come from Debian's packages (``docker.io``: ``/usr/sbin/dockerd``; ``docker-registry``:
``/usr/bin/docker-registry``, distribution 2.8), installed by ``scripts/setup``, and are
started and stopped by the sandbox's own code (``opsdag.dev.sandbox.docker_engine`` and
``opsdag.dev.sandbox.image_registry``: the same servers the sandbox runs), with their
pidfiles and logs in the directory given:

- ``running_dockerd(root)``: ``dockerd --storage-driver=vfs --iptables=false --bridge=none``
  with its data root, exec root, pidfile and socket (``engine.url``) its own, in its own
  process group; ready when ``GET /_ping`` answers on the socket. It starts its own
  containerd (in another process group); stopping sends SIGTERM to dockerd's group, then
  stops its containerd and kills whatever else it had started and left (by PID), so
  nothing survives the block.
- ``running_registry(root, username=..., password=...)``: ``docker-registry serve`` on a
  free loopback port with its storage in ``root``; with a username, an htpasswd file
  (bcrypt) makes it ask for Basic credentials like a real private registry. Ready when
  ``GET /v2/`` answers (200 or 401). Docker treats ``127.0.0.0/8`` as an insecure (plain
  HTTP) registry by default, so no daemon option is needed for it.

Readiness is polled with timeouts, never a fixed sleep. The pytest fixtures at the end
(``docker_engine`` and ``docker_registry``, one each per session and shared;
``docker_default``, the Airflow connection and ``DOCKER_HOST`` for one test) are imported
by the test modules that use them; the benchmark uses the context managers directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from opsdag.dev.sandbox.docker_engine import DOCKERD_BIN as DOCKERD
from opsdag.dev.sandbox.docker_engine import DockerEngine, start_dockerd, stop_dockerd
from opsdag.dev.sandbox.image_registry import REGISTRY_BIN as REGISTRY
from opsdag.dev.sandbox.image_registry import RegistryServer, start_registry
from opsdag.dev.sandbox.processes import ProcessTable
from opsdag.dev.sandbox.processes import free_port as free_port

BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static: a static binary for FROM scratch images
MISSING_HINT = "install it with scripts/setup (Debian packages docker.io, docker-registry, busybox-static)"


def missing_binaries() -> list[str]:
    return [str(path) for path in (DOCKERD, REGISTRY, BUSYBOX) if not path.exists()]


def _processes(root: Path) -> ProcessTable:
    """Pidfiles and logs of a test's servers, in ``root``."""
    return ProcessTable(root / "pids", root / "logs")


@contextlib.contextmanager
def running_dockerd(root: Path | None = None, timeout: float = 60) -> Iterator[DockerEngine]:
    """A dockerd in ``root`` (default: a fresh directory in /tmp), stopped and its processes
    gone after the block."""
    with contextlib.ExitStack() as stack:
        if root is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="opsdag-dockerd-")))
        procs = _processes(root)
        engine = start_dockerd(procs, root, timeout=timeout)
        try:
            yield engine
        finally:
            stop_dockerd(procs)


@contextlib.contextmanager
def running_registry(
    root: Path, *, username: str | None = None, password: str | None = None, timeout: float = 30
) -> Iterator[RegistryServer]:
    """A docker-registry on a free loopback port storing in ``root``; with ``username``, an
    htpasswd realm that asks for those credentials."""
    procs = _processes(root)
    server = start_registry(procs, root, username=username, password=password, timeout=timeout)
    try:
        yield server
    finally:
        if server.record is not None:
            procs.stop(server.record)


def connection_json(registry: RegistryServer) -> str:
    """A ``docker`` Airflow connection (``AIRFLOW_CONN_DOCKER_DEFAULT``) logging in to ``registry``."""
    return json.dumps(registry.docker_connection())


def scratch_context(
    directory: Path, *, dockerfile: str | None = None, files: dict[str, str] | None = None
) -> Path:
    """A build context ``FROM scratch``: Debian's static busybox (hard-linked, or copied) as
    ``/bin/busybox``, the ``app/`` directory with ``files`` (default a ``version.txt``) as
    ``/app``, and ``dockerfile`` (default: that image); the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    binary = directory / "busybox"
    if not binary.exists():
        try:
            os.link(BUSYBOX, binary)
        except OSError:
            binary.write_bytes(BUSYBOX.read_bytes())
            binary.chmod(0o755)
    (directory / "app").mkdir(exist_ok=True)
    for name, text in (files or {"app/version.txt": "1\n"}).items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    (directory / "Dockerfile").write_text(dockerfile or SCRATCH_DOCKERFILE)
    return directory


SCRATCH_DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
COPY app /app
ENTRYPOINT ["/bin/busybox"]
CMD ["cat", "/app/version.txt"]
"""
REGISTRY_USER, REGISTRY_PASSWORD = "opsdag-ci", "opsdag-test-password"  # a throwaway registry's


# -- pytest fixtures ------------------------------------------------------------------------

import pytest  # noqa: E402  (the context managers above are for the benchmark too)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """One dockerd for the session (vfs storage, its own data root and socket)."""
    if missing := missing_binaries():
        pytest.skip(f"missing {', '.join(missing)}: {MISSING_HINT}")
    with running_dockerd() as engine:
        yield engine


@pytest.fixture(scope="session")
def docker_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """One docker-registry for the session on loopback, asking for Basic credentials."""
    if missing := missing_binaries():
        pytest.skip(f"missing {', '.join(missing)}: {MISSING_HINT}")
    root = tmp_path_factory.mktemp("registry")
    with running_registry(root, username=REGISTRY_USER, password=REGISTRY_PASSWORD) as registry:
        yield registry


@pytest.fixture
def docker_default(
    docker_engine: DockerEngine, docker_registry: RegistryServer, monkeypatch: pytest.MonkeyPatch
) -> RegistryServer:
    """``docker_default`` (the registry's login) and ``DOCKER_HOST`` (the engine) for one test."""
    monkeypatch.setenv("AIRFLOW_CONN_DOCKER_DEFAULT", connection_json(docker_registry))
    monkeypatch.setenv("DOCKER_HOST", docker_engine.url)
    return docker_registry

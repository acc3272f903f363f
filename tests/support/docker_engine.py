"""A real Docker engine and a real registry on this machine, for tests and benchmarks.

Both come from Debian's packages (``docker.io``: ``/usr/sbin/dockerd``; ``docker-registry``:
``/usr/bin/docker-registry``, distribution 2.8), installed by ``scripts/setup``:

- ``running_dockerd(root)``: ``dockerd --storage-driver=vfs --iptables=false --bridge=none``
  with its data root, exec root, pidfile and socket (``unix://<root>/docker.sock``) all in
  ``root``, in its own process group; ready when ``GET /_ping`` answers on the socket. It
  starts its own containerd (in another process group, under the exec root); stopping
  sends SIGTERM to dockerd's group, waits for it to exit, then kills whatever it had
  started and left (by PID), so nothing survives the block.
- ``running_registry(root, username=..., password=...)``: ``docker-registry serve`` on a
  free loopback port with its storage in ``root``; with a username, an htpasswd file
  (bcrypt, from the C library's ``crypt``) makes it ask for Basic credentials like a real
  private registry. Ready when ``GET /v2/`` answers (200 or 401). Docker treats
  ``127.0.0.0/8`` as an insecure (plain HTTP) registry by default (``docker info``:
  "Insecure Registries: 127.0.0.0/8"), so no daemon option is needed for it.

Readiness is polled with timeouts (``support.waiting.wait_for``), never a fixed sleep.
The pytest fixtures at the end (``docker_engine`` and ``docker_registry``, one each per
session and shared; ``docker_default``, the Airflow connection and ``DOCKER_HOST`` for one
test) are imported by the test modules that use them; the benchmark uses the context
managers directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from support.waiting import wait_for

DOCKERD = Path("/usr/sbin/dockerd")
REGISTRY = Path("/usr/bin/docker-registry")
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static: a static binary for FROM scratch images
MISSING_HINT = "install it with scripts/setup (Debian packages docker.io, docker-registry, busybox-static)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(pids: set[int]) -> set[int]:
    """``pids`` and every process started from them, from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found = set(pids)
    while more := {pid for pid, parent in parents.items() if parent in found} - found:
        found |= more
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except (OSError, IndexError):
        return False


@dataclass
class DockerEngine:
    """A running dockerd: its socket URL (``unix:///.../docker.sock``) and its process."""

    root: Path
    url: str
    process: subprocess.Popen[bytes]
    log_file: Path

    def client(self, timeout: int = 120):
        import docker

        return docker.APIClient(base_url=self.url, timeout=timeout)

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"dockerd exited with {self.process.returncode}: see {self.log_file}")
        try:
            return self.client(timeout=2).ping()
        except Exception:
            return False

    def stop(self) -> None:
        started = _children({self.process.pid})  # dockerd, its containerd and any shim
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        with contextlib.suppress(TimeoutError):  # dockerd stops its containerd as it exits
            wait_for(lambda: not any(_alive(p) for p in started), 15, 0.1, "containerd to exit")
        for pid in started:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@dataclass
class RegistryServer:
    """A running docker-registry on loopback: ``host`` is ``127.0.0.1:<port>``."""

    root: Path
    host: str
    process: subprocess.Popen[bytes]
    log_file: Path
    username: str | None = None
    password: str | None = None

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {self.process.returncode}: see {self.log_file}")
        try:
            with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1) as response:
                return response.status == 200
        except urllib.error.HTTPError as error:
            return error.code == 401
        except OSError:
            return False

    def connection_json(self) -> str:
        """A ``docker`` Airflow connection (``AIRFLOW_CONN_DOCKER_DEFAULT``) logging in here."""
        host, port = self.host.rsplit(":", 1)
        return json.dumps(
            {"conn_type": "docker", "host": host, "port": int(port), "login": self.username,
             "password": self.password}
        )  # fmt: skip

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def missing_binaries() -> list[str]:
    return [str(path) for path in (DOCKERD, REGISTRY, BUSYBOX) if not path.exists()]


@contextlib.contextmanager
def running_dockerd(root: Path | None = None, timeout: float = 60) -> Iterator[DockerEngine]:
    """A dockerd in ``root`` (default: a fresh short directory in /tmp: socket paths are
    limited to 108 bytes), stopped and its processes gone after the block."""
    with contextlib.ExitStack() as stack:
        if root is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="opsdag-dockerd-")))
        root.mkdir(parents=True, exist_ok=True)
        log_file = root / "dockerd.log"
        command = [
            str(DOCKERD),
            "--storage-driver=vfs",
            "--iptables=false",
            "--ip-masq=false",
            "--bridge=none",
            "--data-root", str(root / "data"),
            "--exec-root", str(root / "exec"),
            "--pidfile", str(root / "dockerd.pid"),
            "--config-file", str(_write(root / "daemon.json", "{}")),
            "-H", f"unix://{root}/docker.sock",
        ]  # fmt: skip
        with open(log_file, "wb") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        engine = DockerEngine(root, f"unix://{root}/docker.sock", process, log_file)
        try:
            wait_for(engine.ready, timeout=timeout, what=f"dockerd on {engine.url}")
            yield engine
        finally:
            engine.stop()


@contextlib.contextmanager
def running_registry(
    root: Path, *, username: str | None = None, password: str | None = None, timeout: float = 30
) -> Iterator[RegistryServer]:
    """A docker-registry on a free loopback port storing in ``root``; with ``username``, an
    htpasswd realm that asks for those credentials."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    auth = ""
    if username:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # the C library's bcrypt ($2b$): the registry's htpasswd format

            hashed = crypt.crypt(password or "", crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 4))
        htpasswd = _write(root / "htpasswd", f"{username}:{hashed}\n")
        auth = f"auth:\n  htpasswd:\n    realm: opsdag-test\n    path: {htpasswd}\n"
    config = _write(
        root / "config.yml",
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: opsdag-test-only\n{auth}",
    )
    log_file = root / "registry.log"
    with open(log_file, "wb") as log:
        process = subprocess.Popen(
            [str(REGISTRY), "serve", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = RegistryServer(root, f"127.0.0.1:{port}", process, log_file, username, password)
    try:
        wait_for(server.ready, timeout=timeout, what=f"docker-registry on {server.host}")
        yield server
    finally:
        server.stop()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


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
    monkeypatch.setenv("AIRFLOW_CONN_DOCKER_DEFAULT", docker_registry.connection_json())
    monkeypatch.setenv("DOCKER_HOST", docker_engine.url)
    return docker_registry

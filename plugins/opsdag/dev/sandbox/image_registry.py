"""The sandbox's image registry: Debian's ``docker-registry`` (distribution 2.8) on loopback.

Images are deployed to the sandbox by digest; the registry is where a build pushes them
and where the sandbox reads an image's config (its ``org.opencontainers.image.version``
label says which demo-app version runs: ``image_resolution``). It serves the repository
host of ``include/sandbox/versions.yaml`` (``registry.opsdag.local``, which resolves
nowhere) at ``127.0.0.1:<port>``.

``start_registry(procs, directory, ...)`` is the server alone, for the sandbox and for the
tests and benchmarks (``tests/support/docker_engine.py``): ``config.yml`` and, with a
username, an ``htpasswd`` file (bcrypt, from the C library's ``crypt``) in ``directory``,
storage in ``directory/storage``, one detached process recorded in ``procs`` (its own
process group). Ready when ``GET /v2/`` answers (200, or 401 when it asks for a login).
Docker treats ``127.0.0.0/8`` as an insecure (plain HTTP) registry by default, so no
engine option is needed to push to it.

``start_image_registry(layout, state, procs, progress)`` is the sandbox's: user
``opsdag``, a password generated once and kept 0600 in ``<sandbox>/registry/password``
(never on a command line or in the state), the port of the previous run when it is free;
images stay across ``down``/``up``. ``sandbox_registry(layout)`` is the running one, or a
``SandboxError`` saying how to start it.
"""

from __future__ import annotations

import secrets
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opsdag.builders.registry import RegistryClient
from opsdag.dev.sandbox.processes import (
    ProcessRecord,
    ProcessTable,
    atomic_write,
    free_port,
    log_tail,
    port_free,
    wait_until,
)
from opsdag.dev.sandbox.starters import timed
from opsdag.dev.sandbox.state import Layout, Progress, SandboxError, load_state
from opsdag.dev.sandbox.versions import load_versions

REGISTRY_BIN = Path("/usr/bin/docker-registry")
PROCESS_NAME = "registry"
SANDBOX_USER = "opsdag"
INSTALL_HINT = "install Debian's docker-registry (scripts/setup)"


@dataclass(frozen=True)
class RegistryServer:
    """A docker-registry on ``127.0.0.1:<port>`` storing in ``directory``; ``record`` is its process."""

    directory: Path
    port: int
    record: ProcessRecord | None = None
    username: str | None = None
    password: str | None = None

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``: the registry part of the image repositories it serves."""
        return f"127.0.0.1:{self.port}"

    def ready(self) -> bool:
        return registry_answers(self.host)

    def client(self, timeout: float = 30.0) -> RegistryClient:
        """A registry API client logged in as this registry's user."""
        return RegistryClient(self.host, username=self.username, password=self.password, timeout=timeout)

    def docker_connection(self, docker_url: str | None = None) -> dict[str, Any]:
        """The Airflow connection (``docker_default``) that logs in here: ``host`` is
        ``127.0.0.1:<port>`` (the registry ``DockerHook`` logs in to), and ``extra.docker_url``
        the engine that builds and pushes, when given."""
        connection: dict[str, Any] = {
            "conn_type": "docker",
            "host": self.host,
            "login": self.username,
            "password": self.password,
        }
        if docker_url:
            connection["extra"] = {"docker_url": docker_url}
        return connection


def registry_answers(host: str, timeout: float = 1.0) -> bool:
    """``GET /v2/`` answers 200, or 401 (a registry asking for a login)."""
    try:
        with urllib.request.urlopen(f"http://{host}/v2/", timeout=timeout) as response:
            return response.status == 200
    except urllib.error.HTTPError as error:
        return error.code == 401
    except OSError:
        return False


def htpasswd_line(username: str, password: str) -> str:
    """``user:$2b$...``: the registry's htpasswd format (bcrypt; low cost, a loopback registry)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # the C library's bcrypt ($2b$); Python 3.11 still has it

        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 4))
    return f"{username}:{hashed}\n"


def write_config(directory: Path, port: int, *, username: str | None, password: str | None) -> Path:
    """``config.yml`` (0600: it holds the upload secret) and, with ``username``, ``htpasswd``."""
    auth = ""
    if username:
        htpasswd = directory / "htpasswd"
        atomic_write(htpasswd, htpasswd_line(username, password or ""), mode=0o600)
        auth = f"auth:\n  htpasswd:\n    realm: opsdag\n    path: {htpasswd}\n"
    config = directory / "config.yml"
    atomic_write(
        config,
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {directory / 'storage'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: {secrets.token_hex(16)}\n{auth}",
        mode=0o600,
    )
    return config


def start_registry(
    procs: ProcessTable,
    directory: Path,
    *,
    port: int | None = None,
    username: str | None = None,
    password: str | None = None,
    name: str = PROCESS_NAME,
    timeout: float = 30.0,
) -> RegistryServer:
    """Start a registry in ``directory`` on ``port`` (default: a free one) and wait until it answers.

    Raises ``SandboxError`` with the log's tail when it exits or does not answer in ``timeout``.
    """
    if not REGISTRY_BIN.exists():
        raise SandboxError(f"{REGISTRY_BIN} is missing: {INSTALL_HINT}")
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = write_config(directory, port, username=username, password=password)
    record = procs.spawn(name, [str(REGISTRY_BIN), "serve", str(config)], env={}, cwd=directory)
    server = RegistryServer(directory, port, record, username, password)
    if not wait_until(lambda: server.ready() or not procs.alive(record), timeout, 0.05) or not procs.alive(
        record
    ):
        procs.stop(record)
        raise SandboxError(f"docker-registry did not answer on {server.host}; see {record.log}:\n"
                           f"{log_tail(record.log, 20)}")  # fmt: skip
    return server


# -- the sandbox's registry --------------------------------------------------------------------


def registry_dir(layout: Layout) -> Path:
    return layout.root / "registry"


def registry_password(layout: Layout) -> str:
    """The sandbox registry's password, made once (0600; kept across ``down``/``up``)."""
    path = registry_dir(layout) / "password"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, secrets.token_urlsafe(24) + "\n", mode=0o600)
    return path.read_text().strip()


def start_image_registry(
    layout: Layout, state: dict[str, Any], procs: ProcessTable, progress: Progress
) -> None:
    """The sandbox's registry unless it runs; the caller holds the sandbox lock and saves the state."""
    info = state.setdefault("registry", {})
    record = procs.read(PROCESS_NAME)
    if record is not None and procs.alive(record) and registry_answers(f"127.0.0.1:{info.get('port')}"):
        progress(f"registry already running on 127.0.0.1:{info['port']}")
        return
    if record is not None:
        procs.stop(record)
    done = timed(progress, "starting the image registry")
    previous = info.get("port")
    server = start_registry(
        procs,
        registry_dir(layout),
        port=previous if previous and port_free(previous) else None,
        username=SANDBOX_USER,
        password=registry_password(layout),
    )
    info.update(
        {
            "port": server.port,
            "host": server.host,
            "serves": load_versions().repository.split("/", 1)[0],
            "user": SANDBOX_USER,
            "password_file": str(registry_dir(layout) / "password"),
            "pid": server.record.pid if server.record else None,
        }
    )
    done(f"{server.host}, serving {info['serves']}")


def registry_of(layout: Layout, state: dict[str, Any]) -> RegistryServer:
    """The sandbox's registry as its state records it (running or not)."""
    port = int(state["registry"]["port"])
    record = layout.processes().read(PROCESS_NAME)
    return RegistryServer(registry_dir(layout), port, record, SANDBOX_USER, registry_password(layout))


def sandbox_registry(layout: Layout) -> RegistryServer:
    """The sandbox's running registry, logged in; ``SandboxError`` when it (or the sandbox) is not up."""
    state = load_state(layout) or {}
    record = layout.processes().read(PROCESS_NAME)
    if not (state.get("registry") or {}).get("port") or record is None or not ProcessTable.alive(record):
        raise SandboxError(
            f"the sandbox's image registry is not running in {layout.root}: "
            "run `python -m opsdag.sandbox up` (or set OPSDAG_SANDBOX_DIR to a running sandbox)"
        )
    return registry_of(layout, state)

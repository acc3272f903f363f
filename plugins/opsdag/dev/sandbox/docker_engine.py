"""The sandbox's Docker engine: Debian's ``dockerd`` on its own socket, where images are built.

``dockerd --storage-driver=vfs --iptables=false --ip-masq=false --bridge=none`` with its
data root, exec root, pidfile, configuration (``{}``: nothing of /etc/docker) and socket
all its own, so it never touches a system engine. Nothing can be pulled from outside
here: images are built ``FROM scratch`` (``include/sandbox/build``) and pushed to the
sandbox's registry (``image_registry``), which Docker treats as an insecure (plain HTTP)
registry because it is on 127.0.0.0/8.

dockerd starts its own containerd, in a session of its own: ``start_dockerd`` records it
too (``<name>-containerd``) so that ``down``, which stops every recorded process group,
and its check that nothing survived both cover it. ``stop_dockerd`` sends SIGTERM to
dockerd's group (it stops its containerd as it exits), then stops what is left of both
records and kills, by PID, any other process dockerd had started.

Unix socket paths are limited to 108 bytes: the socket and the exec root (containerd's
sockets) live in ``<directory>/run`` unless that is too long for them, then in
``/tmp/opsdag-dockerd-<hash of the directory>`` (the same for every caller).

``start_dockerd(procs, directory)`` is the engine alone, for the sandbox and for the tests
and benchmarks (``tests/support/docker_engine.py``); ``start_docker_engine(layout, state,
procs, progress)`` is the sandbox's, in ``<sandbox>/docker`` (images stay across
``down``/``up``). Measured here: ready (``GET /_ping``) in about 0.2 s, ~110 MB RSS for
dockerd and its containerd.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opsdag.dev.sandbox.processes import (
    ProcessRecord,
    ProcessTable,
    atomic_write,
    log_tail,
    pid_alive,
    start_ticks_of,
    wait_until,
)
from opsdag.dev.sandbox.starters import timed
from opsdag.dev.sandbox.state import Layout, Progress, SandboxError, load_state

DOCKERD_BIN = Path("/usr/sbin/dockerd")
PROCESS_NAME = "dockerd"
INSTALL_HINT = "install Debian's docker.io (scripts/setup)"
# The longest socket dockerd's containerd makes under the exec root, and the kernel's limit.
_LONGEST_SOCKET = "exec/containerd/containerd-debug.sock"
_SOCKET_LIMIT = 107


@dataclass(frozen=True)
class EnginePaths:
    """Where one engine keeps its images (``directory``) and its sockets (``run_dir``)."""

    directory: Path
    run_dir: Path

    @property
    def data_root(self) -> Path:
        return self.directory / "data"

    @property
    def config_file(self) -> Path:
        return self.directory / "daemon.json"

    @property
    def exec_root(self) -> Path:
        return self.run_dir / "exec"

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "dockerd.pid"

    @property
    def url(self) -> str:
        """``unix:///.../docker.sock``: ``docker_url`` / ``DOCKER_HOST`` of this engine."""
        return f"unix://{self.socket}"


def engine_paths(directory: Path) -> EnginePaths:
    """The paths of an engine in ``directory``; sockets in a short directory when they must be."""
    directory = directory.absolute()
    run_dir = directory / "run"
    if len(os.fsencode(run_dir / _LONGEST_SOCKET)) > _SOCKET_LIMIT:
        run_dir = Path("/tmp") / f"opsdag-dockerd-{hashlib.sha256(os.fsencode(directory)).hexdigest()[:12]}"
    return EnginePaths(directory, run_dir)


def dockerd_argv(paths: EnginePaths) -> list[str]:
    return [
        str(DOCKERD_BIN),
        "--storage-driver=vfs",
        "--iptables=false",
        "--ip-masq=false",
        "--bridge=none",
        "--data-root", str(paths.data_root),
        "--exec-root", str(paths.exec_root),
        "--pidfile", str(paths.pidfile),
        "--config-file", str(paths.config_file),
        "--host", paths.url,
    ]  # fmt: skip


def engine_answers(socket_path: Path, timeout: float = 1.0) -> bool:
    """``GET /_ping`` on the engine's socket answers ``200 OK``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return sock.recv(64).split(b"\r\n", 1)[0].endswith(b" 200 OK")
    except OSError:
        return False


@dataclass(frozen=True)
class DockerEngine:
    """A running dockerd: its paths, its process and its address (``url``)."""

    paths: EnginePaths
    record: ProcessRecord | None = None

    @property
    def url(self) -> str:
        return self.paths.url

    def ready(self) -> bool:
        return engine_answers(self.paths.socket)

    def client(self, timeout: int = 120):
        """docker-py's low-level ``APIClient`` of this engine (imported on first use)."""
        import docker

        return docker.APIClient(base_url=self.url, timeout=timeout)


def start_dockerd(
    procs: ProcessTable, directory: Path, *, name: str = PROCESS_NAME, timeout: float = 60.0
) -> DockerEngine:
    """Start dockerd in ``directory`` and wait until it answers; its containerd is recorded too.

    Raises ``SandboxError`` with the log's tail (after stopping what started) when it does not.
    """
    if not DOCKERD_BIN.exists():
        raise SandboxError(f"{DOCKERD_BIN} is missing: {INSTALL_HINT}")
    paths = engine_paths(directory)
    for path in (paths.directory, paths.run_dir):
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(paths.config_file, "{}\n")
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    record = procs.spawn(name, dockerd_argv(paths), env=env, cwd=paths.directory)
    engine = DockerEngine(paths, record)
    answered = wait_until(lambda: engine.ready() or not procs.alive(record), timeout, 0.05)
    if answered and procs.alive(record):
        _record_containerd(procs, record)
        return engine
    tail = log_tail(record.log, 20)
    stop_dockerd(procs, name=name)
    raise SandboxError(
        f"dockerd did not answer on {paths.url} within {timeout:g} s; see {record.log}:\n{tail}"
    )


def _record_containerd(procs: ProcessTable, dockerd: ProcessRecord) -> None:
    """Record the containerd dockerd started (its own session) as ``<dockerd's name>-containerd``."""
    children = [pid for pid in _descendants({dockerd.pid}) if _comm(pid) == "containerd"]
    for pid in children[:1]:
        with contextlib.suppress(OSError, ValueError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
            ticks = start_ticks_of(pid)
            procs.write(
                ProcessRecord(f"{dockerd.name}-containerd", pid, os.getpgid(pid), ticks, argv, dockerd.log)
            )


def stop_dockerd(procs: ProcessTable, *, name: str = PROCESS_NAME, timeout: float = 30.0) -> None:
    """Stop dockerd (SIGTERM to its group, SIGKILL after ``timeout``), its containerd and anything
    else it had started; forget both records. Nothing recorded: nothing to do."""
    records = [r for r in (procs.read(name), procs.read(f"{name}-containerd")) if r is not None]
    started = _descendants({r.pid for r in records if ProcessTable.alive(r)})
    for record in records:  # dockerd first: it stops its containerd as it exits
        procs.stop(record, timeout=timeout)
    if not wait_until(lambda: not any(pid_alive(pid) for pid in started), 5.0, 0.05):
        for pid in started:
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _descendants(pids: set[int]) -> set[int]:
    """``pids`` and every process started from them, from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found = set(pids)
    while more := {pid for pid, parent in parents.items() if parent in found} - found:
        found |= more
    return found


# -- the sandbox's engine ----------------------------------------------------------------------


def engine_dir(layout: Layout) -> Path:
    return layout.root / "docker"


def start_docker_engine(
    layout: Layout, state: dict[str, Any], procs: ProcessTable, progress: Progress
) -> None:
    """The sandbox's dockerd unless it runs; the caller holds the sandbox lock and saves the state."""
    paths = engine_paths(engine_dir(layout))
    record = procs.read(PROCESS_NAME)
    if record is not None and procs.alive(record) and engine_answers(paths.socket):
        progress(f"dockerd already running on {paths.url}")
        return
    if record is not None or procs.read(f"{PROCESS_NAME}-containerd") is not None:
        stop_dockerd(procs)
    done = timed(progress, "starting dockerd")
    engine = start_dockerd(procs, engine_dir(layout))
    state["docker"] = {
        "url": engine.url,
        "data_root": str(paths.data_root),
        "pid": engine.record.pid if engine.record else None,
    }
    done(engine.url)


def remove_engine_run_dir(layout: Layout) -> None:
    """Remove the engine's short socket directory in /tmp, if it had one (``down --purge``)."""
    run_dir = engine_paths(engine_dir(layout)).run_dir
    if not run_dir.is_relative_to(layout.root):
        shutil.rmtree(run_dir, ignore_errors=True)


def sandbox_engine(layout: Layout) -> DockerEngine:
    """The sandbox's running engine; ``SandboxError`` when it (or the sandbox) is not up."""
    record = layout.processes().read(PROCESS_NAME)
    if (load_state(layout) or {}).get("docker") is None or record is None or not ProcessTable.alive(record):
        raise SandboxError(
            f"the sandbox's Docker engine is not running in {layout.root}: run `python -m opsdag.sandbox up`"
        )
    return DockerEngine(engine_paths(engine_dir(layout)), record)

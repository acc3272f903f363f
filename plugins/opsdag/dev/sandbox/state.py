"""The sandbox's state directory: where each file lives, the state JSON and its lock.

Everything the sandbox runs is described by ``state.json`` (ports, sockets, which
processes serve which track) so that any process - the CLI, an Airflow task, a test -
can pick up where another left off. Changes take an exclusive ``flock`` on ``.lock``, so
two tasks acting on the sandbox at once are serialised instead of racing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opsdag import paths
from opsdag.dev.sandbox.processes import ProcessTable, atomic_write
from opsdag.platforms.base import PlatformError

STATE_VERSION = 1

# Where up/down and the fleet's operations say what they do (print, or nothing).
Progress = Callable[[str], None]


class SandboxError(PlatformError):
    """The sandbox cannot do what was asked; the message says what to do about it."""


class SandboxNotRunning(SandboxError):
    """There is no sandbox up in the state directory."""


@dataclass(frozen=True)
class Layout:
    """Paths inside one sandbox state directory."""

    root: Path

    @classmethod
    def default(cls) -> Layout:
        return cls(paths.sandbox_dir())

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def haproxy_dir(self) -> Path:
        return self.root / "haproxy"

    @property
    def haproxy_config(self) -> Path:
        return self.haproxy_dir / "haproxy.cfg"

    @property
    def haproxy_socket(self) -> Path:
        return self.haproxy_dir / "admin.sock"

    @property
    def prometheus_dir(self) -> Path:
        return self.root / "prometheus"

    @property
    def prometheus_config(self) -> Path:
        return self.prometheus_dir / "prometheus.yml"

    @property
    def prometheus_data(self) -> Path:
        return self.prometheus_dir / "data"

    @property
    def targets_file(self) -> Path:
        return self.prometheus_dir / "targets" / "demo-apps.json"

    @property
    def postgres_dir(self) -> Path:
        return self.root / "postgres"

    @property
    def connections_file(self) -> Path:
        return self.root / "connections.json"

    @property
    def counts_file(self) -> Path:
        return self.root / "loadgen" / "counts.json"

    @property
    def loadgen_control_file(self) -> Path:
        """What the load generator reads while it runs: ``{"preview_share": 0.05}``."""
        return self.root / "loadgen" / "control.json"

    def processes(self) -> ProcessTable:
        return ProcessTable(self.run_dir, self.log_dir)


@contextlib.contextmanager
def locked(layout: Layout) -> Iterator[None]:
    """Hold the sandbox's exclusive lock (blocks until other changes finish)."""
    layout.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(layout.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def load_state(layout: Layout) -> dict[str, Any] | None:
    try:
        state = json.loads(layout.state_file.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise SandboxError(
            f"{layout.state_file}: corrupt state ({exc}); run `python -m opsdag.sandbox down`"
        ) from exc
    if state.get("state_version") != STATE_VERSION:
        raise SandboxError(
            f"{layout.state_file}: state version {state.get('state_version')} is not {STATE_VERSION}; "
            "run `python -m opsdag.sandbox down` and `up` again"
        )
    return state


def require_state(layout: Layout) -> dict[str, Any]:
    state = load_state(layout)
    if state is None or not state.get("fleet"):
        raise SandboxNotRunning(
            f"the sandbox is not up in {layout.root}: run `python -m opsdag.sandbox up` "
            "(or set OPSDAG_SANDBOX_DIR to the directory of a running one)"
        )
    return state


def save_state(layout: Layout, state: dict[str, Any]) -> None:
    layout.root.mkdir(parents=True, exist_ok=True)
    atomic_write(layout.state_file, json.dumps(state, indent=2, sort_keys=True) + "\n")


def read_counts(layout: Layout) -> dict[str, Any] | None:
    """The load generator's counts file (cumulative answers per version and status), if any."""
    try:
        return json.loads(layout.counts_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None

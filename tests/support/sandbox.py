"""Test support for a running sandbox: the ``sandbox`` pytest fixture and its helpers.

``running_sandbox(directory)`` brings a sandbox up in ``directory`` with
``OPSDAG_SANDBOX_DIR`` pointing at it (so ``SandboxDriver()`` and subprocesses such as
Airflow tasks find it), yields a ``SandboxHandle`` and tears everything down afterwards,
failing loudly if any process survives.

tests/conftest.py registers the session fixture for every test directory; the
benchmarks use ``running_sandbox`` (with tests/ on sys.path, as ``support.sandbox``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from opsdag.dev.sandbox import control
from opsdag.dev.sandbox.controller import FleetController
from opsdag.dev.sandbox.demo_database import postgres_server
from opsdag.dev.sandbox.fleet import DEFAULT_INSTANCES
from opsdag.dev.sandbox.postgres import PostgresServer
from opsdag.dev.sandbox.processes import group_members, pid_alive
from opsdag.dev.sandbox.prometheus_server import PrometheusClient
from opsdag.dev.sandbox.state import Layout, load_state, locked
from opsdag.dev.sandbox.status import read_counts, status
from opsdag.dev.sandbox.versions import load_versions
from opsdag.platforms.routers.haproxy import HaproxyRouter
from opsdag.platforms.sandbox import SandboxDriver
from support.waiting import wait_for


@dataclass
class SandboxHandle:
    """A running sandbox: where it is and shortcuts to its parts."""

    layout: Layout

    @property
    def root(self) -> Path:
        return self.layout.root

    def state(self) -> dict[str, Any]:
        return load_state(self.layout) or {}

    def status(self) -> dict[str, Any]:
        return status(layout=self.layout)

    def driver(self) -> SandboxDriver:
        """The workload driver of this sandbox (``platform.kind: sandbox``)."""
        return SandboxDriver(sandbox_dir=self.layout.root)

    def router(self, **kwargs: Any) -> HaproxyRouter:
        """The traffic router of this sandbox (``platform.router.kind: haproxy``)."""
        return HaproxyRouter(sandbox_dir=self.layout.root, **kwargs)

    def counts(self) -> dict[str, Any] | None:
        """The load generator's counts file (cumulative answers per version and status)."""
        return read_counts(self.layout)

    @property
    def frontend_url(self) -> str:
        return f"http://127.0.0.1:{self.state()['haproxy']['frontend_port']}/"

    @property
    def prometheus(self) -> PrometheusClient:
        return PrometheusClient(self.state()["prometheus"]["url"])

    @property
    def postgres(self) -> PostgresServer:
        return postgres_server(self.layout)

    def image(self, tag: str) -> str:
        return load_versions().image_for(tag)

    def recorded_pids(self) -> list[int]:
        """Every PID the sandbox has recorded: pidfiles (process groups) and the postmaster."""
        pids = [record.pid for record in self.layout.processes().records()]
        pg = self.state().get("postgres", {}).get("pid")
        if pg:
            pids.append(pg)
        return pids

    def stop_component(self, name: str) -> None:
        """Stop one server (``prometheus``, ``haproxy``, ``loadgen``) to test an outage."""
        with locked(self.layout):
            procs = self.layout.processes()
            record = procs.read(name)
            if record is None:
                raise ValueError(f"the sandbox has no process named {name!r}")
            procs.stop(record)

    def restart_missing(self) -> None:
        """``up`` again: restarts what was stopped (on its old port when free), keeps the rest."""
        control.up(layout=self.layout, progress=lambda _msg: None)

    def stop_prometheus(self) -> None:
        self.stop_component("prometheus")

    def start_prometheus(self) -> None:
        self.restart_missing()

    def reset(self, stable_tag: str | None = None, instances: int = DEFAULT_INSTANCES) -> None:
        """Back to a known fleet: no canary; stable ``stable_tag`` (default: the initial one)
        running ``instances`` processes."""
        controller = FleetController(self.layout)
        controller.remove_canary()
        tag = stable_tag or load_versions().initial_stable
        stable = self.state()["fleet"]["stable"]
        if stable["version"] == tag and len(stable["instances"]) == instances:
            return
        controller.start(self.image(tag), instances)
        wait_for(lambda: controller.readiness().ready, 20, what=f"canary {tag} ready")
        controller.promote()


@contextlib.contextmanager
def running_sandbox(
    directory: str | Path, *, rate: float = 50.0, quiet: bool = True
) -> Iterator[SandboxHandle]:
    """Up in ``directory`` (with ``OPSDAG_SANDBOX_DIR`` set), yield a handle, then down."""
    layout = Layout(Path(directory).resolve())
    previous = os.environ.get("OPSDAG_SANDBOX_DIR")
    os.environ["OPSDAG_SANDBOX_DIR"] = str(layout.root)
    progress = (lambda _msg: None) if quiet else print
    handle = SandboxHandle(layout)
    try:
        control.up(layout=layout, progress=progress, rate=rate, max_duration=3600)
        yield handle
    finally:
        pids = handle.recorded_pids() if layout.state_file.exists() else []
        try:
            control.down(layout=layout, progress=progress)
            # A cluster relocated out of pytest's 0700 tmp tree would outlive the session.
            handle.postgres.remove_relocated()
        finally:
            if previous is None:
                os.environ.pop("OPSDAG_SANDBOX_DIR", None)
            else:
                os.environ["OPSDAG_SANDBOX_DIR"] = previous
        survivors = [pid for pid in pids if pid_alive(pid) or group_members(pid)]
        if survivors:
            raise AssertionError(f"sandbox processes survived down: {survivors}")


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxHandle]:
    """A sandbox running for the whole session; ``reset()`` removes a test's canary.

    Its state directory is not under pytest's numbered temp dirs (a concurrent pytest
    session resets their root to 0700, which locks the ``postgres`` user out, and prunes
    old ones); the logs are copied to ``<pytest tmp>/sandbox0/logs`` at the end.
    """
    keep = tmp_path_factory.mktemp("sandbox")
    root = Path(tempfile.mkdtemp(prefix="opsdag-sandbox-"))
    os.chmod(root, 0o711)
    try:
        with running_sandbox(root) as handle:
            yield handle
    finally:
        with contextlib.suppress(OSError):
            shutil.copytree(root / "logs", keep / "logs")
        shutil.rmtree(root, ignore_errors=True)

"""Deploy by digest in the sandbox: build, push to its registry, and run the labelled version.

The session sandbox runs a real registry (docker-registry, htpasswd login) and a real
Docker engine (dockerd, vfs) besides its fleet. Here the demo app's build context
(``include/sandbox/build``) is built by opsdag's ``DockerEngineBuilder`` with the sandbox's
``docker_default`` connection, pushed where the sandbox driver says
(``push_repository``), and deployed as ``registry.opsdag.local/demo-api@sha256:...``: the
image's ``org.opencontainers.image.version`` label picks the demo-app version and its faults.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.sandbox import SandboxHandle, running_sandbox
from support.waiting import wait_for

from opsdag import paths
from opsdag.builders.context import resolve_context
from opsdag.builders.docker_builder import BuiltImage, DockerEngineBuilder
from opsdag.dev.sandbox.docker_engine import engine_answers, engine_paths, remove_engine_run_dir
from opsdag.dev.sandbox.processes import group_members, pid_alive
from opsdag.dev.sandbox.status import format_status, sandbox_status
from opsdag.platforms.base import CANARY, PlatformError
from opsdag.platforms.sandbox import SandboxDriver
from opsdag.spec.service import ImageBuild

pytestmark = pytest.mark.timeout(300)

REPOSITORY = "registry.opsdag.local/demo-api"  # include/sandbox/versions.yaml's, resolving nowhere
UNKNOWN = "sha256:" + "0" * 64


def build(sandbox: SandboxHandle, version: str) -> BuiltImage:
    """``include/sandbox/build`` as ``version``, pushed to the sandbox's registry."""
    connection = json.loads((sandbox.root / "connections.json").read_text())["docker_default"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_DOCKER_DEFAULT", json.dumps(connection))
        builder = DockerEngineBuilder(docker_url=connection["extra"]["docker_url"])
        return builder.build(
            resolve_context(ImageBuild(context="include/sandbox/build"), paths.project_root()),
            repository=sandbox.driver().push_repository(REPOSITORY),
            version=version,
            logger=logging.getLogger("opsdag.test.sandbox_build"),
        )


@pytest.fixture(scope="module")
def errors_image(sandbox: SandboxHandle) -> BuiltImage:
    """The demo app labelled 1.2.0-errors (declared: 8 % of answers are HTTP 500)."""
    return build(sandbox, "1.2.0-errors")


@pytest.fixture
def sbx(sandbox: SandboxHandle) -> Iterator[SandboxHandle]:
    """The session sandbox without a canary before and after the test."""
    sandbox.reset()
    yield sandbox
    sandbox.reset()


def test_docker_default_logs_in_to_the_registry_and_names_the_engine(sandbox: SandboxHandle) -> None:
    state = sandbox.state()
    connections_file = sandbox.root / "connections.json"
    connection = json.loads(connections_file.read_text())["docker_default"]
    password_file = sandbox.root / "registry" / "password"
    assert connection == {
        "conn_type": "docker",
        "host": f"127.0.0.1:{state['registry']['port']}",
        "login": "opsdag",
        "password": password_file.read_text().strip(),
        "extra": {"docker_url": f"unix://{engine_paths(sandbox.root / 'docker').socket}"},
    }
    assert password_file.stat().st_mode & 0o777 == 0o600
    assert connections_file.stat().st_mode & 0o777 == 0o600
    assert engine_answers(Path(connection["extra"]["docker_url"].removeprefix("unix://")))
    with pytest.raises(urllib.error.HTTPError) as refused:  # it asks for the login
        urllib.request.urlopen(f"http://{connection['host']}/v2/", timeout=5)
    assert refused.value.code == 401
    status = sandbox.status()
    assert status["registry"]["running"] and status["dockerd"]["running"]
    assert connection["password"] not in json.dumps(status)
    assert connection["password"] not in format_status(sandbox_status(sandbox.layout))


def test_push_repository_is_the_sandbox_registry(sandbox: SandboxHandle) -> None:
    driver = sandbox.driver()
    host = sandbox.state()["registry"]["host"]
    assert driver.push_repository(REPOSITORY) == f"{host}/demo-api"
    assert driver.push_repository(f"{host}/demo-api") == f"{host}/demo-api"
    with pytest.raises(PlatformError, match=r"pulls images only from registry\.opsdag\.local/<name>"):
        driver.push_repository("ghcr.io/shop/demo-api")


def test_a_digest_runs_the_version_its_label_names(sbx: SandboxHandle, errors_image: BuiltImage) -> None:
    assert errors_image.labels["org.opencontainers.image.version"] == "1.2.0-errors"
    image = f"{REPOSITORY}@{errors_image.digest}"
    driver = sbx.driver()
    resolved = driver.resolve_image(image)
    assert (resolved.pullable, resolved.reason, resolved.digest) == (True, "", errors_image.digest)
    assert driver.resolve_image(errors_image.reference).pullable  # the push address works too

    driver.start(image, 1)
    wait_for(lambda: driver.readiness().ready, 20, what="the canary of the pushed image")
    canary = sbx.status()["canary"]
    assert (canary["image"], canary["version"]) == (image, "1.2.0-errors")
    assert f"canary      1.2.0-errors ({image})" in format_status(sandbox_status(sbx.layout))
    assert driver.status().canary.image == image
    [instance] = canary["instances"]
    argv = sbx.layout.processes().read(instance["name"]).argv
    assert argv[argv.index("--error-rate") + 1] == "0.08"  # the version's faults, from versions.yaml

    codes = [answer(instance["port"]) for _ in range(200)]  # P(no 500 at 8 %) = 0.92^200 < 1e-7
    assert {version for _, version in codes} == {"1.2.0-errors"}
    assert 0 < sum(code == 500 for code, _ in codes) < 60


def answer(port: int) -> tuple[int, str]:
    """One request to a demo-app instance: its HTTP status and its X-Version."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            return response.status, response.headers["X-Version"]
    except urllib.error.HTTPError as error:
        return error.code, error.headers["X-Version"]


def test_a_digest_the_registry_does_not_have_cannot_be_pulled(sbx: SandboxHandle) -> None:
    driver = sbx.driver()
    image = f"{REPOSITORY}@{UNKNOWN}"
    resolved = driver.resolve_image(image)
    assert not resolved.pullable
    assert (
        resolved.reason
        == f"image {image} cannot be pulled: the sandbox registry has no manifest {UNKNOWN} in demo-api"
    )
    driver.start(image, 1)
    readiness = driver.readiness()
    assert readiness.failed and readiness.reason == resolved.reason
    assert sbx.status()["canary"]["instances"] == []
    driver.remove(CANARY)

    elsewhere = driver.resolve_image(f"ghcr.io/shop/demo-api@{UNKNOWN}")
    assert (
        not elsewhere.pullable
        and "the sandbox pulls only from registry.opsdag.local and 127.0.0.1:" in elsewhere.reason
    )


def test_a_label_naming_an_undeclared_version_cannot_be_pulled(sandbox: SandboxHandle) -> None:
    built = build(sandbox, "9.9.9-undeclared")
    image = f"{REPOSITORY}@{built.digest}"
    resolved = sandbox.driver().resolve_image(image)
    assert not resolved.pullable
    assert resolved.reason == (
        f"image {image} cannot be pulled: its label org.opencontainers.image.version=9.9.9-undeclared "
        "is not a version declared in include/sandbox/versions.yaml"
    )


def test_without_a_running_registry(tmp_path: Path) -> None:
    driver = SandboxDriver(sandbox_dir=tmp_path / "nowhere")
    resolved = driver.resolve_image(f"{REPOSITORY}@{UNKNOWN}")
    assert not resolved.pullable
    assert "cannot be pulled: the sandbox's image registry is not running in" in resolved.reason
    assert driver.resolve_image(f"{REPOSITORY}:1.1.0").pullable  # tags need no running sandbox
    with pytest.raises(PlatformError, match=r"registry is not running .*`python -m opsdag\.sandbox up`"):
        driver.push_repository(REPOSITORY)


def test_down_stops_the_registry_dockerd_and_its_containerd(tmp_path: Path) -> None:
    """A sandbox of its own, in a directory too long for containerd's sockets (they go to /tmp)."""
    root = tmp_path / ("s" * max(1, 75 - len(str(tmp_path)) - 1))  # PostgreSQL's socket still fits
    with running_sandbox(root, rate=5) as own:
        records = {r.name: r for r in own.layout.processes().records()}
        servers = [records[name] for name in ("registry", "dockerd", "dockerd-containerd")]
        assert all(pid_alive(r.pid, r.start_ticks) for r in servers)
        socket = Path(own.state()["docker"]["url"].removeprefix("unix://"))
        assert socket.parent.parent == Path("/tmp") and engine_answers(socket)
    assert [r.name for r in servers if pid_alive(r.pid, r.start_ticks) or group_members(r.pgid)] == []
    leftovers = [p for p in Path("/proc").glob("[0-9]*/cmdline") if str(root).encode() in _read(p)]
    assert leftovers == []
    remove_engine_run_dir(own.layout)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""

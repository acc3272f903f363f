# ruff: noqa: F811  (pytest fixtures imported from a helper module are redefined as arguments)
"""The Docker engine builder against a real dockerd and a real registry (Debian's packages).

Each test builds a ``FROM scratch`` image (Debian's static busybox) from a build context in
a throwaway "repository" directory, through ``DockerEngineBuilder`` with the
``docker_default`` connection logging in to a registry that asks for credentials.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError
from support.docker_engine import (  # noqa: F401  (fixtures)
    DockerEngine,
    RegistryServer,
    docker_default,
    docker_engine,
    docker_registry,
    free_port,
    scratch_context,
)

from opsdag.builders.context import BuildContextError, resolve_context
from opsdag.builders.docker_builder import BuildFailed, DockerEngineBuilder, EngineUnreachable
from opsdag.builders.registry import RegistryClient, RegistryError
from opsdag.spec.service import ImageBuild

pytestmark = pytest.mark.timeout(300)
LOGGER = "opsdag.test.build"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with the service's build context in ``services/app``."""
    scratch_context(tmp_path / "repo" / "services" / "app")
    return tmp_path / "repo"


@pytest.fixture
def repository(docker_default: RegistryServer) -> str:
    """A fresh image repository in the test registry (nothing cached from other tests)."""
    return f"{docker_default.host}/opsdag-test/app-{uuid.uuid4().hex[:8]}"


class Lines(logging.Handler):
    """The builder's log lines, in order (Airflow's logging config may keep them from caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def lines() -> Lines:
    handler, logger = Lines(), logging.getLogger(LOGGER)
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def registry_client(server: RegistryServer) -> RegistryClient:
    return RegistryClient(server.host, username=server.username, password=server.password)


def build(repo: Path, repository: str, version: str = "1.0.0", **kwargs):
    spec = ImageBuild(context="services/app", **kwargs.pop("spec", {}))
    builder = DockerEngineBuilder(docker_conn_id=kwargs.pop("docker_conn_id", "docker_default"), **kwargs)
    return builder.build(
        resolve_context(spec, repo),
        repository=repository,
        version=version,
        revision="0123abc",
        source="https://git.example.com/shop/app",
        logger=logging.getLogger(LOGGER),
    )


def test_build_push_and_pull_by_digest(repo, repository, docker_default, lines):
    result = build(repo, repository)

    assert result.pushed and not result.cached
    assert result.reference == f"{repository}@{result.digest}"
    assert result.tags == ("1.0.0",)
    name = repository.split("/", 1)[1]
    with registry_client(docker_default) as registry:
        assert registry.manifest_digest(name, "1.0.0") == result.digest  # Docker-Content-Digest
        assert registry.manifest_digest(name, result.cache_tag) == result.digest
        assert registry.has_digest(name, result.digest)
        assert not registry.has_digest(name, "sha256:" + "0" * 64)  # the sandbox's "cannot be pulled"
        labels = registry.image_labels(name, result.digest)
    with pytest.raises(RegistryError, match="asks for credentials and none were given"):
        RegistryClient(docker_default.host).manifest_digest(name, "1.0.0")
    assert labels["org.opencontainers.image.version"] == "1.0.0"
    assert labels["org.opencontainers.image.revision"] == "0123abc"
    assert labels["org.opencontainers.image.source"] == "https://git.example.com/shop/app"
    assert labels["org.opencontainers.image.created"] == result.labels["org.opencontainers.image.created"]
    # the engine's lines reached the log one by one, as they came
    assert "Step 1/9 : FROM scratch" in lines.messages
    assert any(m.startswith("Successfully built ") for m in lines.messages)

    # pulled back by digest into an engine that no longer has it
    builder = DockerEngineBuilder()
    client = builder.api_client
    for tag in (*result.tags, result.cache_tag):
        client.remove_image(f"{repository}:{tag}", force=True)
    client.pull(repository, tag=result.digest)
    pulled = client.inspect_image(result.reference)
    assert result.reference in pulled["RepoDigests"]
    assert pulled["Config"]["Labels"]["org.opencontainers.image.version"] == "1.0.0"


def test_same_context_is_not_rebuilt_and_a_change_is(repo, repository, docker_default, lines):
    first = build(repo, repository)
    lines.messages.clear()
    again = DockerEngineBuilder().build(
        resolve_context(ImageBuild(context="services/app"), repo),
        repository=repository,
        version="1.0.0",
        tags=["1.0.0", "stable"],
        logger=logging.getLogger(LOGGER),
    )
    assert (again.cached, again.pushed, again.digest) == (True, False, first.digest)
    messages = lines.messages
    assert any(m.startswith("not rebuilt: context services/app") and first.cache_tag in m for m in messages)
    assert not any(m.startswith("Step ") for m in messages)
    assert again.labels["org.opencontainers.image.revision"] == "0123abc"  # the pushed image's labels
    name = repository.split("/", 1)[1]
    with registry_client(docker_default) as registry:
        assert registry.manifest_digest(name, "stable") == first.digest  # the new tag points at it

    (repo / "services" / "app" / "app" / "version.txt").write_text("2\n")
    changed = build(repo, repository)
    assert changed.pushed and not changed.cached
    assert changed.digest != first.digest and changed.context_hash != first.context_hash
    # another version label is another image, even from the same files
    assert build(repo, repository, version="1.0.1").context_hash != changed.context_hash


def test_build_args_and_target_reach_the_engine(repo, repository):
    (repo / "services" / "app" / "Dockerfile.multi").write_text(
        "FROM scratch AS base\nCOPY busybox /bin/busybox\n"
        "FROM base AS release\nARG FLAVOUR=plain\nLABEL flavour=$FLAVOUR\n"
        "FROM base AS debug\nLABEL flavour=debug\n"
    )
    spec = {"dockerfile": "Dockerfile.multi", "build_args": {"FLAVOUR": "spicy"}, "target": "release"}
    result = build(repo, repository, spec=spec)
    assert result.pushed
    inspected = DockerEngineBuilder().api_client.inspect_image(result.reference)
    assert inspected["Config"]["Labels"]["flavour"] == "spicy"


@pytest.mark.parametrize(
    ("dockerfile", "engine_text"),
    [
        ("FROM scratch\nRUN true\n", '"/bin/sh": stat /bin/sh: no such file or directory'),
        ("FROM scratch\nCOPY missing /missing\n", "missing"),
    ],
    ids=["run-in-scratch", "copy-missing"],
)
def test_failing_dockerfile_fails_with_the_engines_text(
    repo, repository, docker_default, dockerfile, engine_text
):
    (repo / "services" / "app" / "Dockerfile").write_text(dockerfile)
    with pytest.raises(BuildFailed, match=engine_text):
        build(repo, repository)
    with registry_client(docker_default) as registry:
        assert registry.manifest_digest(repository.split("/", 1)[1], "1.0.0") is None  # nothing pushed


def test_context_outside_the_repository_is_refused_before_building(repo, tmp_path, docker_engine):
    outside = scratch_context(tmp_path / "elsewhere")
    (repo / "services" / "linked").symlink_to(outside)
    images_before = {image["Id"] for image in docker_engine.client().images(all=True)}
    with pytest.raises(
        BuildContextError, match=r"^image\.build\.context: 'services/linked' resolves to .*outside"
    ):
        resolve_context(ImageBuild(context="services/linked"), repo)
    with pytest.raises(ValidationError, match=r"context\n.*'\.\./elsewhere' must stay inside the repository"):
        ImageBuild(context="../elsewhere")
    with pytest.raises(BuildContextError, match=r"^image\.build\.context: '\.\./elsewhere' must stay inside"):
        resolve_context(ImageBuild.model_construct(context="../elsewhere", dockerfile="Dockerfile"), repo)
    with pytest.raises(BuildContextError, match=r"^image\.build\.dockerfile: there is no file 'Nope'"):
        resolve_context(ImageBuild(context="services/app", dockerfile="Nope"), repo)
    assert {image["Id"] for image in docker_engine.client().images(all=True)} == images_before


def test_unreachable_registry_fails_the_push_with_the_engines_error(repo, docker_default):
    repository = f"127.0.0.1:{free_port()}/opsdag-test/nowhere"
    with pytest.raises(BuildFailed, match=r"connection refused"):
        build(repo, repository)


def test_unreachable_engine_fails_clearly(repo, repository, tmp_path):
    url = f"unix://{tmp_path}/no-docker.sock"
    with pytest.raises(EngineUnreachable, match=rf"the Docker engine at {url} cannot be reached"):
        build(repo, repository, docker_url=url)


def test_push_refused_by_the_registry_fails_with_its_words(repo, repository, docker_default, monkeypatch):
    """The connection's password is wrong: the login (or the push) is refused, nothing is pushed."""
    wrong = {**docker_default.docker_connection(), "password": "not-the-password"}
    monkeypatch.setenv("AIRFLOW_CONN_DOCKER_DEFAULT", json.dumps(wrong))
    with pytest.raises(BuildFailed, match=r"(?i)unauthorized|authentication required") as refused:
        build(repo, repository)
    assert "not-the-password" not in str(refused.value)  # the secret never reaches the error
    with registry_client(docker_default) as registry:
        assert registry.manifest_digest(repository.split("/", 1)[1], "1.0.0") is None

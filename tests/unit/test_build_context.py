"""The pure parts of image builds: path checks, the content hash, stream reading, labels, names.

No engine, no registry: temporary directories and lists of the lines docker-py decodes.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from opsdag.builders.context import BuildContextError, resolve_context
from opsdag.builders.docker_builder import check_tags, oci_labels
from opsdag.builders.engine_stream import BuildFailed, read_build_stream, read_push_stream
from opsdag.builders.registry import DOCKER_HUB, is_loopback, parse_repository
from opsdag.spec.loader import parse_spec
from opsdag.spec.service import Image, ImageBuild

LOG = logging.getLogger("opsdag.test.unit.build")


def make_repo(root: Path) -> Path:
    context = root / "repo" / "services" / "app"
    (context / "src").mkdir(parents=True)
    (context / "Dockerfile").write_text("FROM scratch\nCOPY src /src\n")
    (context / "src" / "main.txt").write_text("hello\n")
    (context / "src" / "run.sh").write_text("#!/bin/sh\n")
    return root / "repo"


def ctx(repo: Path, **fields):
    return resolve_context(ImageBuild(context=fields.pop("context", "services/app"), **fields), repo)


# -- the spec: relative paths, each error at its field --------------------------------------------


@pytest.mark.parametrize(
    ("build", "field", "fragment"),
    [
        ({"context": "../other"}, "build.context", "must stay inside the repository: '..' is not allowed"),
        ({"context": "a/../../b"}, "build.context", "'..' is not allowed"),
        ({"context": "/srv/app"}, "build.context", "must be a relative path"),
        ({"context": ""}, "build.context", "must not be empty"),
        ({"context": ".", "dockerfile": "../Dockerfile"}, "build.dockerfile", "'..' is not allowed"),
        ({"context": ".", "dockerfile": "/etc/Dockerfile"}, "build.dockerfile", "must be a relative path"),
        ({"context": ".", "dockerfile": "docker/"}, "build.dockerfile", "must name a file"),
        ({"context": ".", "build_args": {"1X": "v"}}, "build.build_args.1X", "not a build argument name"),
        ({"context": ".", "build_args": {"A-B": "v"}}, "build.build_args.A-B", "not a build argument name"),
        ({"context": ".", "target": "two words"}, "build.target", "not a stage name"),
        ({"context": ".", "cache": True}, "build.cache", ""),
    ],
)
def test_spec_refuses_paths_outside_naming_the_field(build, field, fragment):
    _, errors = parse_spec(Image, {"repository": "registry.example.com/shop/app", "build": build}, "x.yaml")
    assert [e.field for e in errors] == [field]
    assert fragment in errors[0].problem


def test_spec_accepts_build_args_and_target():
    build = ImageBuild(
        context="services/app",
        dockerfile="docker/Dockerfile",
        build_args={"GO_VERSION": "1.23"},
        target="release",
    )
    assert (build.build_args, build.target, build.builder) == ({"GO_VERSION": "1.23"}, "release", "docker")


# -- the files: inside the repository, also through symlinks ------------------------------------


def test_resolve_gives_paths_inside_the_repository(tmp_path):
    repo = make_repo(tmp_path)
    context = ctx(repo, build_args={"A": "1"}, target="t")
    assert context.directory == (repo / "services" / "app").resolve()
    assert context.dockerfile_for_engine == "Dockerfile"
    assert context.relative_directory == "services/app"
    assert (context.build_args, context.target) == ({"A": "1"}, "t")


def test_a_dockerfile_elsewhere_in_the_repository_is_sent_by_its_path(tmp_path):
    repo = make_repo(tmp_path)
    (repo / "docker").mkdir()
    (repo / "docker" / "app.Dockerfile").write_text("FROM scratch\n")
    (repo / "services" / "app" / "df").symlink_to(repo / "docker" / "app.Dockerfile")
    context = ctx(repo, dockerfile="df")
    assert context.dockerfile_for_engine == str((repo / "docker" / "app.Dockerfile").resolve())


@pytest.mark.parametrize(
    ("link", "fields", "message"),
    [
        ("services/out", {"context": "services/out"},
         r"^image\.build\.context: 'services/out' resolves to .* outside"),
        ("services/app/Outside.Dockerfile", {"dockerfile": "Outside.Dockerfile"},
         r"^image\.build\.dockerfile: 'Outside.Dockerfile' resolves to .* outside"),
    ],
)  # fmt: skip
def test_symlinks_escaping_the_repository_are_refused(tmp_path, link, fields, message):
    repo = make_repo(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "Dockerfile").write_text("FROM scratch\n")
    (repo / link).symlink_to(outside / "Dockerfile" if "Dockerfile" in link else outside)
    with pytest.raises(BuildContextError, match=message):
        ctx(repo, **fields)


def test_missing_context_or_dockerfile_names_the_field(tmp_path):
    repo = make_repo(tmp_path)
    with pytest.raises(
        BuildContextError, match=r"^image\.build\.context: 'services/nope' is not a directory"
    ):
        ctx(repo, context="services/nope")
    with pytest.raises(
        BuildContextError, match=r"^image\.build\.dockerfile: there is no file 'Dockerfile\.prod'"
    ):
        ctx(repo, dockerfile="Dockerfile.prod")
    # a spec built without validation is still refused by the run-time check
    with pytest.raises(BuildContextError, match=r"^image\.build\.context: '\.\./x' must stay inside"):
        resolve_context(ImageBuild.model_construct(context="../x", dockerfile="Dockerfile"), repo)
    with pytest.raises(
        BuildContextError, match=r"^image\.build\.dockerfile: '/etc/passwd' must be a relative"
    ):
        resolve_context(ImageBuild.model_construct(context=".", dockerfile="/etc/passwd"), repo)


# -- the content hash ----------------------------------------------------------------------


def test_hash_is_stable_and_ignores_mtimes_and_copies(tmp_path):
    repo = make_repo(tmp_path)
    first = ctx(repo).context_hash()
    assert len(first) == 64 and first == ctx(repo).context_hash()
    for path in (repo / "services" / "app").rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))
    assert ctx(repo).context_hash() == first
    copy = make_repo(tmp_path / "elsewhere")  # same files, another checkout, created in another order
    assert ctx(copy).context_hash() == first


@pytest.mark.parametrize(
    "change",
    [
        lambda app: (app / "src" / "main.txt").write_text("hello!\n"),
        lambda app: (app / "src" / "main.txt").rename(app / "src" / "other.txt"),
        lambda app: (app / "src" / "run.sh").chmod(0o755),
        lambda app: (app / "src" / "new").mkdir(),
        lambda app: (app / "src" / "link").symlink_to("/bin/busybox"),
        lambda app: (app / "Dockerfile").write_text("FROM scratch\nCOPY src /srv\n"),
    ],
    ids=["content", "rename", "mode", "empty-dir", "symlink", "dockerfile"],
)
def test_hash_changes_with_what_the_engine_receives(tmp_path, change):
    repo = make_repo(tmp_path)
    before = ctx(repo).context_hash()
    change(repo / "services" / "app")
    assert ctx(repo).context_hash() != before


def test_hash_changes_with_args_target_and_identity_but_not_ignored_files(tmp_path):
    repo = make_repo(tmp_path)
    base = ctx(repo).context_hash({"version": "1"})
    assert ctx(repo, build_args={"A": "1"}).context_hash({"version": "1"}) != base
    assert ctx(repo, target="release").context_hash({"version": "1"}) != base
    assert ctx(repo).context_hash({"version": "2"}) != base
    app = repo / "services" / "app"
    (app / ".dockerignore").write_text("# build junk\n*.log\n")
    ignoring = ctx(repo).context_hash()
    (app / "debug.log").write_text("noise")
    assert ctx(repo).context_hash() == ignoring  # the engine never sees it


def test_args_are_hashed_independent_of_their_order(tmp_path):
    repo = make_repo(tmp_path)
    one = ctx(repo, build_args={"A": "1", "B": "2"}).context_hash()
    assert ctx(repo, build_args={"B": "2", "A": "1"}).context_hash() == one


# -- reading the engine's streams -------------------------------------------------------------


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def lines():
    handler = Lines()
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    yield handler
    LOG.removeHandler(handler)


def test_build_stream_logs_whole_lines_and_returns_the_image_id(lines):
    stream = [
        {"stream": "Step 1/2 : FROM scratch"},
        {"stream": "\n"},
        {"stream": " ---> \n"},
        {"stream": "Step 2/2 : COPY a /a\n ---> 3694855648b1\n"},
        {"aux": {"ID": "sha256:abc"}},
        {"stream": "Successfully built abc\n"},
    ]
    assert read_build_stream(iter(stream), LOG) == "sha256:abc"
    assert lines.messages == [
        "Step 1/2 : FROM scratch",
        " --->",
        "Step 2/2 : COPY a /a",
        " ---> 3694855648b1",
        "Successfully built abc",
    ]


def test_build_stream_error_line_fails_with_the_engines_text(lines):
    message = 'failed to create shim task: exec: "/bin/sh": stat /bin/sh: no such file or directory'
    stream = [{"stream": "Step 2/2 : RUN true\n"}, {"errorDetail": {"message": message}, "error": message}]
    with pytest.raises(BuildFailed) as failure:
        read_build_stream(iter(stream), LOG)
    assert str(failure.value) == message
    assert lines.messages == ["Step 2/2 : RUN true"]
    with pytest.raises(BuildFailed, match="without an image id"):
        read_build_stream(iter([{"stream": "Step 1/1 : FROM scratch\n"}]), LOG)


def test_push_stream_returns_the_aux_digest_and_fails_on_error_detail(lines):
    stream = [
        {"status": "The push refers to repository [127.0.0.1:5000/a]"},
        {"status": "Preparing", "progressDetail": {}, "id": "4969b74fa13e"},
        {
            "status": "Pushing",
            "progressDetail": {"current": 1, "total": 9},
            "progress": "[=>  ]",
            "id": "4969b74fa13e",
        },
        {"status": "Pushed", "progressDetail": {}, "id": "4969b74fa13e"},
        {"progressDetail": {}, "aux": {"Tag": "1", "Digest": "sha256:" + "a" * 64, "Size": 528}},
    ]
    assert read_push_stream(iter(stream), LOG) == "sha256:" + "a" * 64
    assert "4969b74fa13e: Pushed" in lines.messages and not any("Pushing" in m for m in lines.messages)
    refused = [{"errorDetail": {"message": "denied: requested access to the resource is denied"},
                "error": "denied: requested access to the resource is denied"}]  # fmt: skip
    with pytest.raises(BuildFailed, match=r"^denied: requested access"):
        read_push_stream(iter(refused), LOG)
    with pytest.raises(BuildFailed, match="without a digest"):
        read_push_stream(iter(stream[:-1]), LOG)


# -- labels, tags, repository names ------------------------------------------------------------


def test_oci_labels():
    created = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
    assert oci_labels(version="1.2.3", created=created) == {
        "org.opencontainers.image.version": "1.2.3",
        "org.opencontainers.image.created": "2026-11-30T02:00:00+00:00",
    }
    full = oci_labels(version="1", created=created, revision="abc", source="https://git.example.com/x")
    assert full["org.opencontainers.image.revision"] == "abc"
    assert full["org.opencontainers.image.source"] == "https://git.example.com/x"


def test_tags_are_checked():
    assert check_tags(["1.0.0", "stable", "1.0.0"]) == ("1.0.0", "stable")
    with pytest.raises(ValueError, match=r"^tags: 'a/b' is not a Docker tag"):
        check_tags(["a/b"])
    with pytest.raises(ValueError, match=r"^tags: 'ctx-1': tags starting with 'ctx-'"):
        check_tags(["ctx-1"])


@pytest.mark.parametrize(
    ("repository", "expected"),
    [
        ("127.0.0.1:5000/team/app", ("127.0.0.1:5000", "team/app")),
        ("registry.example.com/shop/checkout", ("registry.example.com", "shop/checkout")),
        ("localhost/app", ("localhost", "app")),
        ("team/app", (DOCKER_HUB, "team/app")),
        ("busybox", (DOCKER_HUB, "library/busybox")),
    ],
)
def test_parse_repository(repository, expected):
    assert parse_repository(repository) == expected


def test_loopback_registries_are_plain_http():
    assert all(map(is_loopback, ["127.0.0.1:5000", "localhost:5000", "127.1.2.3", "[::1]:5000", "localhost"]))
    assert not any(map(is_loopback, ["registry.example.com", "10.0.0.1:5000", "ghcr.io"]))

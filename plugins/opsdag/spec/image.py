"""The image section of a service spec: its repository and, optionally, how to build it.

A release with ``build: true`` builds from ``image.build`` with the builder named there
(``docker``: a Docker engine through the docker provider; ``kaniko``: a build pod in a
cluster through the cncf-kubernetes provider) and then deploys ``repository@sha256:...``.
Each builder's settings are refused under the other builder: nothing is accepted and ignored.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from opsdag.spec.common import DnsName, Duration, FieldProblem, StrictModel

_REPOSITORY = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
_IMAGE_REFERENCE = re.compile(r"^[^\s@]+(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127}|@sha256:[a-f0-9]{64})$")
_GIT_CONTEXT = re.compile(r"^git://\S+$")


class KanikoBuildSpec(StrictModel):
    """How the in-cluster builder runs: a Kaniko-compatible executor in a build pod.

    The original Kaniko repository was archived in 2025; maintained forks publish the same
    executor, so its image is a setting here rather than a default. The build context must
    be reachable from the pod: a ``git://`` URL (``#refs/...`` selects a ref) or a
    PersistentVolumeClaim holding this repository, mounted at ``/workspace``; ``image.build.context``
    is the directory inside it either way.
    """

    executor_image: str = Field(description="the executor image, e.g. <registry>/kaniko-executor:<tag>")
    namespace: DnsName = "default"
    kubernetes_conn_id: str = "kubernetes_default"
    registry_secret: str | None = Field(
        default=None, description="a kubernetes.io/dockerconfigjson secret with the push credentials"
    )
    service_account: str | None = None
    git_url: str | None = Field(default=None, description="git://host/repo.git[#refs/heads/main]")
    context_claim: str | None = Field(default=None, description="a PVC holding the repository")
    timeout: Duration = timedelta(minutes=30)
    cache: bool = False

    @field_validator("executor_image")
    @classmethod
    def _executor_reference(cls, value: str) -> str:
        if not _IMAGE_REFERENCE.match(value):
            raise ValueError(f"{value!r} is not an image reference with a tag or a digest")
        return value

    @field_validator("git_url")
    @classmethod
    def _git_url(cls, value: str | None) -> str | None:
        if value is not None and not _GIT_CONTEXT.match(value):
            raise ValueError(f"{value!r} is not a git:// URL")
        if value is not None and "@" in value.split("#", 1)[0]:
            raise ValueError("must not carry credentials; put them in the registry secret or the cluster")
        return value

    @model_validator(mode="after")
    def _one_context_source(self) -> KanikoBuildSpec:
        if (self.git_url is None) == (self.context_claim is None):
            raise ValueError(
                "give exactly one of git_url or context_claim: where the build pod reads the context"
            )
        return self


class ImageBuild(StrictModel):
    """Where and how the image is built when a release asks for ``build``.

    ``context`` is a directory relative to the repository (the directory holding
    ``include/``) and ``dockerfile`` a file relative to that context, as ``docker build -f``
    reads it with docker-py. Both are plain relative paths: no ``..`` component, not
    absolute, no backslash; that they exist and do not escape the repository through a
    symlink is checked when the build runs (``opsdag.builders.context``), against the files.
    """

    context: str = Field(description="build context directory, relative to the repository")
    dockerfile: str = Field(default="Dockerfile", description="the Dockerfile, relative to the context")
    builder: Literal["docker", "kaniko"] = "docker"
    build_args: dict[str, str] = Field(
        default_factory=dict, description="--build-arg NAME=VALUE for the Dockerfile's ARGs (no secrets)"
    )
    target: str | None = Field(default=None, description="the stage of a multi-stage Dockerfile to build")
    source: str | None = Field(
        default=None, description="the source repository's URL (the org.opencontainers.image.source label)"
    )
    docker_conn_id: str = Field(
        default="docker_default",
        description="docker builder: the registry login and the engine address (extra docker_url)",
    )
    kaniko: KanikoBuildSpec | None = Field(default=None, validate_default=True)

    @field_validator("context", "dockerfile")
    @classmethod
    def _relative_inside(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            raise ValueError("must not be empty; use '.' for the repository itself")
        if value.startswith("/") or "\\" in value or "\x00" in value:
            raise ValueError(f"{value!r} must be a relative path with '/' separators, not absolute")
        if ".." in value.split("/"):
            raise ValueError(f"{value!r} must stay inside the repository: '..' is not allowed")
        if info.field_name == "dockerfile" and value.split("/")[-1] in ("", "."):
            raise ValueError(f"{value!r} must name a file")
        return value

    @field_validator("build_args")
    @classmethod
    def _arg_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            word = name.replace("_", "a")
            if not (word.isascii() and word.isalnum() and word[0].isalpha()):
                raise FieldProblem((name,), f"{name!r} is not a build argument name (letters, digits, _)")
        return value

    @field_validator("target")
    @classmethod
    def _target_stage(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c.isspace() for c in value)):
            raise ValueError(f"{value!r} is not a stage name")
        return value

    @field_validator("source")
    @classmethod
    def _source_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not re.match(r"^(https?|git|ssh)://[^/@\s]+(/\S*)?$", value):
            raise ValueError(f"{value!r} is not a repository URL without credentials (https://...)")
        return value

    @field_validator("kaniko")
    @classmethod
    def _kaniko_for_kaniko(cls, value: KanikoBuildSpec | None, info: ValidationInfo) -> object:
        builder = info.data.get("builder")
        if builder == "kaniko" and value is None:
            raise ValueError(
                "the kaniko builder needs a kaniko section (executor_image, git_url or context_claim)"
            )
        if builder == "docker" and value is not None:
            raise ValueError("a kaniko section is only read by builder: kaniko (this build uses docker)")
        return value


class Image(StrictModel):
    repository: str
    build: ImageBuild | None = None

    @field_validator("repository")
    @classmethod
    def _repository_shape(cls, value: str) -> str:
        if ":" in value.rsplit("/", 1)[-1] or "@" in value:
            raise ValueError(f"{value!r} must be a repository without tag or digest")
        if not _REPOSITORY.match(value):
            raise ValueError(f"{value!r} is not an image repository like registry.example.com/team/app")
        return value

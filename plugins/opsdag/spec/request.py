"""The release run conf (the contract): validated in the DAG's Params and again, whole, here.

Params are JSON Schema, checked by Airflow when a run is triggered from the UI or the
REST API. ``ReleaseRequest`` re-checks the conf as one object (unknown keys refused,
the image belonging to the service's repository) so that a run created any other way
is refused by its first task, before anything changes. The CLI client uses the same
model to refuse bad input locally.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from opsdag.spec.common import StrictModel
from opsdag.spec.field_errors import field_path
from opsdag.spec.service import ServiceSpec

TAG = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}"
DIGEST = r"sha256:[a-f0-9]{64}"
# Any full reference: path segments, a registry port only before a path ("localhost:5000/app").
# Matched with fullmatch: Python's ``$`` also matches before a trailing newline.
_REFERENCE = re.compile(rf"[^\s:@/]+(:[0-9]+(?=/))?(/[^\s:@/]+)*(:{TAG}|@{DIGEST})")
# Refuses whitespace anywhere, a trailing newline included, in Python's ``re`` (Airflow's
# jsonschema) and in the browser's regular expressions alike (neither knows ``\Z``).
_NO_WHITESPACE = r"(?![\s\S]*\s)"


def image_pattern(repository: str) -> str:
    """JSON-Schema pattern of an image of ``repository``: ``repo:tag`` or ``repo@sha256:<digest>``."""
    return rf"^{_NO_WHITESPACE}{re.escape(repository)}(:{TAG}|@{DIGEST})$"


class ReleaseRequest(StrictModel):
    image: str
    strategy: Literal["canary", "bluegreen", "rolling"] | None = None
    build: bool = False
    dry_run: bool = False
    reason: str = Field(default="", max_length=500)

    @field_validator("image", mode="before")
    @classmethod
    def _no_whitespace(cls, value: object) -> object:
        """Checked before the model strips whitespace: ``...:1.1.0\n`` is a typo, not ``...:1.1.0``."""
        if isinstance(value, str) and any(ch.isspace() for ch in value):
            raise ValueError(f"{value!r} contains whitespace; an image reference has none")
        return value

    @field_validator("image")
    @classmethod
    def _image_reference(cls, value: str) -> str:
        if not _REFERENCE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a full image reference: "
                "write registry/repo:tag or repo@sha256:<64 hex digits>"
            )
        return value


class RequestRefused(ValueError):
    """The run conf is not a valid release request; the message lists ``field: problem`` lines."""


def validate_request(conf: dict[str, Any], spec: ServiceSpec) -> ReleaseRequest:
    try:
        request = ReleaseRequest.model_validate(conf)
    except ValidationError as exc:
        lines = [f"{field_path(e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
        raise RequestRefused("release request refused:\n" + "\n".join(lines)) from None
    if not re.fullmatch(image_pattern(spec.image.repository), request.image):
        raise RequestRefused(
            f"release request refused:\nimage: {request.image!r} is not an image of {spec.name}'s repository "
            f"{spec.image.repository!r}"
        )
    if request.build and spec.image.build is None:
        raise RequestRefused(
            f"release request refused:\nbuild: {spec.name} declares no image.build (context, builder) "
            "to build from; release an image that is already pushed, or add image.build to its spec"
        )
    if request.build and "@" in request.image:
        raise RequestRefused(
            f"release request refused:\nimage: {request.image!r} is a digest; a build pushes a tag: "
            f"give {spec.image.repository}:<version> and the release deploys the digest it pushed"
        )
    return request

"""The release request (the run conf) as the model, the Params pattern and the first task see it.

One table of image references is checked three ways: by ``ReleaseRequest`` alone (any
full reference), by the JSON-Schema pattern of the DAG's ``image`` Param and by
``validate_request`` (both: an image of the service's own repository). No Airflow here.
"""

from __future__ import annotations

import jsonschema
import pytest
from pydantic import ValidationError

from opsdag.spec.request import ReleaseRequest, RequestRefused, image_pattern, validate_request
from opsdag.spec.service import ServiceSpec

REPO = "registry.opsdag.local/demo-api"
HEX64 = "0123456789abcdef" * 4


def service(repository: str = REPO, *, build: bool = False) -> ServiceSpec:
    """The smallest service spec with this image repository (and an image build, if asked)."""
    image: dict = {"repository": repository}
    if build:
        image["build"] = {"context": "services/demo-api"}
    return ServiceSpec.model_validate(
        {
            "name": "demo-api",
            "owners": ["platform-team"],
            "platform": {"kind": "sandbox"},
            "image": image,
            "canary": {"steps": [{"weight": 100, "bake": "20s"}]},
            "analysis": {"metrics": [{"name": "error-rate", "query": "x{$canary}", "max": 0.02}]},
        }
    )


# -- image references ---------------------------------------------------------------------------

IMAGE_CASES = [
    # (id, image, a full reference?, an image of REPO?)
    ("a tag", f"{REPO}:1.1.0", True, True),
    ("a digest", f"{REPO}@sha256:{HEX64}", True, True),
    ("a tag of 128 characters, the most there is", f"{REPO}:{'v' * 128}", True, True),
    ("a tag of 129 characters", f"{REPO}:{'v' * 129}", False, False),
    ("a tag of one character", f"{REPO}:7", True, True),
    ("a tag of letters, digits, '_', '.' and '-'", f"{REPO}:Release_2.0-rc.1", True, True),
    ("a tag may start with '_'", f"{REPO}:_build", True, True),
    ("a tag may not start with '.'", f"{REPO}:.hidden", False, False),
    ("a tag may not start with '-'", f"{REPO}:-rc1", False, False),
    ("no '+' in a tag (semver build metadata)", f"{REPO}:1.0.0+build.5", False, False),
    ("no '/' in a tag", f"{REPO}:feature/x", False, False),
    ("an empty tag", f"{REPO}:", False, False),
    ("no tag and no digest", REPO, False, False),
    ("a digest of 63 hex digits", f"{REPO}@sha256:{HEX64[:63]}", False, False),
    ("a digest of 65 hex digits", f"{REPO}@sha256:{HEX64}0", False, False),
    ("a digest in capitals", f"{REPO}@sha256:{HEX64.upper()}", False, False),
    ("a digest with a non-hex letter", f"{REPO}@sha256:{'g' + HEX64[1:]}", False, False),
    ("a digest of another algorithm", f"{REPO}@sha512:{HEX64}", False, False),
    ("a tag and a digest together", f"{REPO}:1.1.0@sha256:{HEX64}", False, False),
    ("a space in the registry", "registry opsdag.local/demo-api:1.1.0", False, False),
    ("a space in the name", "registry.opsdag.local/demo api:1.1.0", False, False),
    ("an empty path segment", "registry.opsdag.local//demo-api:1.1.0", False, False),
    ("another repository", "docker.io/library/nginx:1.27", True, False),
    ("a repository that merely starts like ours", f"{REPO}-v2:1.1.0", True, False),
    ("a repository below ours", f"{REPO}/debug:1.1.0", True, False),
    ("a name without a registry", "nginx:1.27", True, False),
    ("a registry with a port", "localhost:5000/demo-api:1.1.0", True, False),
    ("a port and a tag without a path", "localhost:5000:1.1.0", False, False),
    ("a port that is not a number", "localhost:http/demo-api:1.1.0", False, False),
]


@pytest.mark.parametrize(
    ("image", "full", "ours"), [case[1:] for case in IMAGE_CASES], ids=[case[0] for case in IMAGE_CASES]
)
def test_image_references(image: str, full: bool, ours: bool) -> None:
    # The model: any full reference.
    if full:
        assert ReleaseRequest(image=image).image == image
    else:
        refusal = (
            "contains whitespace" if any(ch.isspace() for ch in image) else "is not a full image reference"
        )
        with pytest.raises(ValidationError, match=refusal):
            ReleaseRequest(image=image)
    # The Params form (JSON Schema, as Airflow checks it) and the first task: our repository only.
    schema = {"type": "string", "pattern": image_pattern(REPO)}
    assert jsonschema.Draft7Validator(schema).is_valid(image) is ours
    if ours:
        assert validate_request({"image": image}, service()).image == image
    else:
        with pytest.raises(RequestRefused):
            validate_request({"image": image}, service())


def test_a_registry_with_a_port() -> None:
    # The spec allows "host:port/path" as a repository; its images must be releasable.
    spec = service("localhost:5000/demo-api")
    image = "localhost:5000/demo-api:1.1.0"
    assert validate_request({"image": image}, spec).image == image
    assert jsonschema.Draft7Validator({"pattern": image_pattern(spec.image.repository)}).is_valid(image)
    with pytest.raises(RequestRefused, match="is not an image of demo-api's repository"):
        validate_request({"image": "localhost:5001/demo-api:1.1.0"}, spec)


def test_the_repository_is_matched_literally() -> None:
    # '.' in a repository is a dot, not "any character".
    spec = service("registry.opsdag.local/demo.api")
    assert validate_request({"image": "registry.opsdag.local/demo.api:1"}, spec)
    with pytest.raises(RequestRefused, match="is not an image of"):
        validate_request({"image": "registry.opsdag.local/demoXapi:1"}, spec)


@pytest.mark.parametrize("image", [f"  {REPO}:1.1.0", f"{REPO}:1.1.0\n", f"{REPO}:1.1.0 ", f"{REPO}:1.1\t.0"])
def test_whitespace_anywhere_in_an_image_is_refused_not_dropped(image: str) -> None:
    # "...:1.1.0\n" is a typo: refused by the model, the Params pattern and the first task alike.
    with pytest.raises(RequestRefused, match=r"image: .* contains whitespace; an image reference has none"):
        validate_request({"image": image}, service())
    assert not jsonschema.Draft7Validator({"pattern": image_pattern(REPO)}).is_valid(image)


def test_surrounding_spaces_of_the_reason_are_dropped() -> None:
    assert validate_request({"image": f"{REPO}:1.1.0", "reason": " hotfix "}, service()).reason == "hotfix"


# -- the other fields -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "accepted"),
    [
        ({"strategy": "canary"}, True),
        ({"strategy": "bluegreen"}, True),
        ({"strategy": "rolling"}, True),
        ({"strategy": None}, True),
        ({"strategy": "yolo"}, False),
        ({"reason": "r" * 500}, True),
        ({"reason": "r" * 501}, False),
        ({"dry_run": True}, True),
        ({"dry_run": "maybe"}, False),
        ({"colour": "blue"}, False),
    ],
)
def test_fields_of_the_request(extra: dict, accepted: bool) -> None:
    conf = {"image": f"{REPO}:1.1.0", **extra}
    if accepted:
        request = validate_request(conf, service())
        assert request.model_dump() == {
            "image": f"{REPO}:1.1.0",
            "strategy": None,
            "build": False,
            "dry_run": False,
            "reason": "",
            **extra,
        }
    else:
        with pytest.raises(RequestRefused, match=f"^release request refused:\n{next(iter(extra))}: "):
            validate_request(conf, service())


# -- what a refusal says ------------------------------------------------------------------------------

REFUSAL_CASES = [
    # (id, conf, build in the spec?, the whole message)
    (
        "no image",
        {},
        False,
        "release request refused:\nimage: Field required",
    ),
    (
        "every problem on its own line, without pydantic's 'Value error, '",
        {"image": REPO, "strategy": "yolo", "colour": "blue"},
        False,
        "release request refused:\n"
        f"image: {REPO!r} is not a full image reference: "
        "write registry/repo:tag or repo@sha256:<64 hex digits>\n"
        "strategy: Input should be 'canary', 'bluegreen' or 'rolling'\n"
        "colour: Extra inputs are not permitted",
    ),
    (
        "an image of another repository",
        {"image": "docker.io/library/nginx:1.27"},
        False,
        "release request refused:\n"
        "image: 'docker.io/library/nginx:1.27' is not an image of demo-api's repository "
        "'registry.opsdag.local/demo-api'",
    ),
    (
        "a build without image.build",
        {"image": f"{REPO}:1.1.0", "build": True},
        False,
        "release request refused:\nbuild: demo-api declares no image.build (context, builder) to build "
        "from; release an image that is already pushed, or add image.build to its spec",
    ),
    (
        "a build of a digest",
        {"image": f"{REPO}@sha256:{'a' * 64}", "build": True},
        True,
        f"release request refused:\nimage: '{REPO}@sha256:{'a' * 64}' is a digest; a build pushes a tag: "
        f"give {REPO}:<version> and the release deploys the digest it pushed",
    ),
]


@pytest.mark.parametrize(
    ("conf", "buildable", "message"),
    [case[1:] for case in REFUSAL_CASES],
    ids=[case[0] for case in REFUSAL_CASES],
)
def test_a_refusal_says_which_field_and_what_is_wrong(conf: dict, buildable: bool, message: str) -> None:
    with pytest.raises(RequestRefused) as refused:
        validate_request(conf, service(build=buildable))
    assert str(refused.value) == message


def test_a_service_with_an_image_build_releases_without_building() -> None:
    request = validate_request({"image": f"{REPO}:1.1.0", "build": False}, service(build=True))
    assert request == ReleaseRequest(image=f"{REPO}:1.1.0", build=False)


def test_a_build_is_accepted_when_the_service_declares_how_to_build() -> None:
    request = validate_request({"image": f"{REPO}:1.1.0", "build": True}, service(build=True))
    assert (request.image, request.build) == (f"{REPO}:1.1.0", True)


def test_a_service_without_an_image_build_releases_built_images() -> None:
    request = validate_request({"image": f"{REPO}:1.1.0", "build": False, "dry_run": True}, service())
    assert (request.build, request.dry_run) == (False, True)

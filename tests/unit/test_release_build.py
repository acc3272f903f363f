"""A release that builds its image: the spec's build section, the build pod's inputs, and what
the report and Slack say about the build (digest, labels, build time) or its failure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from opsdag.builders.kaniko_pod import build_pod_manifest
from opsdag.builders.release_build import kaniko_build, version_of
from opsdag.notify.release_messages import release_outcome, release_started
from opsdag.paths import include_dir
from opsdag.reports.release_facts import ReleaseFacts, build_record
from opsdag.reports.release_markdown import render_markdown
from opsdag.reports.release_wording import next_actions, summary
from opsdag.spec.image import ImageBuild
from opsdag.spec.service import ServiceSpec

DIGEST = "sha256:" + "ab" * 32
REPO = "registry.opsdag.local/demo-api"
T0 = datetime(2026, 11, 30, 5, 0, tzinfo=UTC)
LABELS = {
    "org.opencontainers.image.version": "1.1.0",
    "org.opencontainers.image.created": "2026-11-30T05:00:01+00:00",
    "org.opencontainers.image.revision": "0123456789abcdef0123456789abcdef01234567",
}
BUILT = {
    "image": f"{REPO}@{DIGEST}",
    "digest": DIGEST,
    "builder": "docker",
    "version": "1.1.0",
    "pushed_to": "127.0.0.1:45123/demo-api",
    "labels": LABELS,
    "build_seconds": 3.4,
    "cached": False,
    "detail": "context include/sandbox/build (hash 0123456789ab)",
}
KANIKO = {
    "executor_image": "registry.example.com/build/kaniko-executor:1.25.0",
    "namespace": "shop",
    "registry_secret": "checkout-push",
    "git_url": "git://git.example.com/shop/checkout.git#refs/heads/main",
}


def service(name: str) -> ServiceSpec:
    return ServiceSpec.model_validate(
        yaml.safe_load((include_dir() / "services" / f"{name}.yaml").read_text())
    )


# ---------------------------------------------------------------------------- the spec


@pytest.mark.parametrize(
    ("build", "field", "problem"),
    [
        ({"context": "app", "builder": "kaniko"}, "kaniko", "needs a kaniko section"),
        ({"context": "app", "kaniko": KANIKO}, "kaniko", "only read by builder: kaniko"),
        (
            {"context": "app", "builder": "kaniko", "kaniko": {**KANIKO, "context_claim": "repo"}},
            "kaniko",
            "exactly one of git_url or context_claim",
        ),
        (
            {"context": "app", "builder": "kaniko", "kaniko": {**KANIKO, "executor_image": "kaniko"}},
            "kaniko.executor_image",
            "not an image reference with a tag or a digest",
        ),
        (
            {"context": "app", "builder": "kaniko", "kaniko": {**KANIKO, "git_url": "git://u:p@h/r.git"}},
            "kaniko.git_url",
            "must not carry credentials",
        ),
        ({"context": "app", "source": "https://user:token@example.com/r"}, "source", "without credentials"),
        ({"context": "../elsewhere"}, "context", "must stay inside the repository"),
    ],
)
def test_a_build_section_that_cannot_be_performed_is_refused_naming_the_field(
    build: dict, field: str, problem: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        ImageBuild.model_validate(build)
    error = refused.value.errors()[0]
    assert ".".join(str(part) for part in error["loc"]) == field
    assert problem in error["msg"]


def test_the_shipped_services_say_how_they_are_built() -> None:
    assert service("demo-api").image.build.context == "include/sandbox/build"
    checkout = service("checkout").image.build
    assert (checkout.builder, checkout.kaniko.namespace) == ("kaniko", "shop")


def test_the_version_built_is_the_requested_tag() -> None:
    assert version_of(f"{REPO}:1.2.0-errors") == "1.2.0-errors"
    assert version_of("127.0.0.1:5000/app:2") == "2"
    for image in ("127.0.0.1:5000/app", f"{REPO}@{DIGEST}"):
        with pytest.raises(ValueError, match="names no tag"):
            version_of(image)


# ---------------------------------------------------------------------------- the build pod


def test_the_build_pod_builds_the_spec_context_with_labels_fixed_for_the_run(tmp_path) -> None:
    spec = service("checkout")
    run = dict(service="checkout", run_id="manual__2026-11-30T05:00:00+00:00", version="2.0.1")
    builder, pod_build = kaniko_build(
        spec.image.build, push_repository=spec.image.repository, created=T0, root=tmp_path, **run
    )
    again = kaniko_build(
        spec.image.build, push_repository=spec.image.repository, created=T0, root=tmp_path, **run
    )
    manifest = build_pod_manifest(pod_build, builder.settings)
    # a retry of the run makes the same pod (same arguments), so it adopts the running build
    assert manifest == build_pod_manifest(again[1], again[0].settings)
    kubernetes_validate.validate(manifest, "1.33", strict=True)
    args = manifest["spec"]["containers"][0]["args"]
    assert "--context=git://git.example.com/shop/checkout.git#refs/heads/main" in args
    assert "--context-sub-path=services/checkout" in args
    assert "--destination=registry.example.com/shop/checkout:2.0.1" in args
    assert "--label=org.opencontainers.image.version=2.0.1" in args
    assert "--label=org.opencontainers.image.created=2026-11-30T05:00:00+00:00" in args
    assert manifest["metadata"]["namespace"] == "shop"
    assert manifest["spec"]["containers"][0]["image"] == "registry.example.com/build/kaniko-executor:1.25.0"
    assert builder.kubernetes_conn_id == "kubernetes_default"


# ---------------------------------------------------------------------------- report and Slack


def facts(**changes) -> ReleaseFacts:
    base = {
        "service": service("demo-api"),
        "dag_id": "release__demo-api",
        "run_id": "manual__2026-11-30T05:00:00+00:00",
        "started_at": T0,
        "finished_at": T0 + timedelta(seconds=50),
        "params": {"image": f"{REPO}:1.1.0", "build": True, "dry_run": False},
        "request": {"image": f"{REPO}@{DIGEST}", "build": BUILT, "digest": DIGEST, "strategy": "canary"},
        "preflight": {"stable_image": f"{REPO}:1.0.0", "checks": [{"name": "router", "ok": True}]},
        "post_promotion": {"ok": True},
    }
    return ReleaseFacts(**{**base, **changes})


def test_a_built_release_reports_its_digest_labels_and_build_time() -> None:
    record = build_record(facts())
    assert record.status == "promoted"
    assert record.image == f"{REPO}@{DIGEST}"
    markdown = render_markdown(record)
    assert "## Image build" in markdown
    assert f"Deployed by digest: `{REPO}@{DIGEST}`" in markdown
    assert "built and pushed, in 3.4 s (docker builder)" in markdown
    assert "| org.opencontainers.image.version | 1.1.0 |" in markdown
    _, blocks = release_outcome(record)
    shown = str(blocks)
    assert f"`{REPO}@{DIGEST}`" in shown
    assert "docker, built in 3.4 s" in shown
    assert "org.opencontainers.image.revision: 0123456789abcdef0123456789abcdef01234567" in shown
    assert record.model_dump(mode="json")["build"]["labels"] == LABELS


def test_a_failed_build_fails_the_release_before_any_change_with_the_engine_s_words() -> None:
    error = (
        "AirflowFailException: build failed: Step 2/3 : RUN false: The command returned a non-zero code: 1"
    )
    record = build_record(
        facts(
            request={"image": f"{REPO}:1.1.0", "build": True, "strategy": "canary"},
            preflight=None,
            post_promotion=None,
            failure=("build", error),
        )
    )
    assert record.status == "failed"
    assert record.incidents == ()  # nothing changed on the platform: not an incident
    assert summary(record).startswith(
        "demo-api 1.1.0 failed at the image build, before any change: build: build failed"
    )
    assert "returned a non-zero code: 1" in summary(record)
    assert "## Image build" in render_markdown(record)
    assert "Failed, before any change to the platform:" in render_markdown(record)
    assert any("Read the log of task build" in action for action in next_actions(record))


def test_the_started_message_says_the_image_is_built_first() -> None:
    text, blocks = release_started(
        service_name="demo-api",
        image=f"{REPO}:1.1.0",
        strategy="canary",
        build="include/sandbox/build (docker builder)",
    )
    assert text.endswith("building it first from include/sandbox/build (docker builder).")
    assert "then deploys the pushed digest" in str(blocks)

"""The in-cluster build pod: its manifest (checked against the Kubernetes schemas), the
executor's arguments, every refused input, and the pure reading of a pod's outcome."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import kubernetes_validate
import pytest
from kubernetes.client import (
    V1ContainerState,
    V1ContainerStateRunning,
    V1ContainerStateTerminated,
    V1ContainerStateWaiting,
    V1ContainerStatus,
    V1Pod,
    V1PodStatus,
)

from opsdag.builders.kaniko_builder import KanikoBuildError, PodOutcome, pod_outcome, read_digest
from opsdag.builders.kaniko_pod import (
    ANNOTATION_RUN_ID,
    BuildPodError,
    KanikoBuild,
    KanikoSettings,
    build_pod_manifest,
    executor_args,
    pod_name,
    split_reference,
)

SETTINGS = KanikoSettings(
    executor_image="registry.example.com/tools/kaniko-executor:v1.25.0",
    namespace="builds",
    registry_secret="registry-push",
    service_account="image-builder",
)
BUILD = KanikoBuild(
    service="checkout",
    run_id="manual__2026-11-30T02:12:35.123456+00:00",
    context="git://git.example.com/acme/shop.git#refs/heads/main",
    context_sub_path="services/checkout",
    dockerfile="Dockerfile",
    destinations=(
        "registry.example.com:5000/acme/checkout:1.4.2",
        "registry.example.com:5000/acme/checkout:latest",
    ),
    build_args={"VERSION": "1.4.2", "GO_FLAGS": "-trimpath --x=1"},
    target="runtime",
    cache=True,
)


# The Kubernetes versions checked: the oldest supported here (1.33) and the newest the
# pinned kubernetes-validate ships (1.37); strict: no field the schema does not know.
@pytest.mark.parametrize("version", ["1.33.0", "1.37.0"])
@pytest.mark.parametrize(
    "build, settings",
    [
        (BUILD, SETTINGS),
        (
            replace(BUILD, build_args={}, target=None, cache=False, context_sub_path=None),
            KanikoSettings(executor_image="kaniko:latest", registry_secret=None, memory_limit=None),
        ),
        (
            replace(
                BUILD,
                context="dir:///workspace/checkout",
                context_claim="build-contexts",
                context_sub_path=None,
            ),
            SETTINGS,
        ),
        (
            replace(BUILD, context="s3://acme-build-contexts/checkout.tar.gz", context_sub_path=None),
            replace(SETTINGS, cache_repo="registry.example.com:5000/acme/cache"),
        ),
    ],
    ids=["git-full", "minimal", "claim", "s3-cache-repo"],
)
def test_manifest_is_a_valid_pod(build: KanikoBuild, settings: KanikoSettings, version: str) -> None:
    manifest = build_pod_manifest(build, settings)
    assert kubernetes_validate.validate(manifest, version, strict=True) == version.rsplit(".", 1)[0]


def test_manifest_fields() -> None:
    manifest = build_pod_manifest(BUILD, SETTINGS)
    meta, spec = manifest["metadata"], manifest["spec"]
    assert meta["name"] == pod_name("checkout", BUILD.run_id)
    assert meta["namespace"] == "builds"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "opsdag"
    assert meta["labels"]["opsdag.io/service"] == "checkout"
    assert meta["annotations"][ANNOTATION_RUN_ID] == BUILD.run_id
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 1800
    assert spec["serviceAccountName"] == "image-builder"
    (container,) = spec["containers"]
    assert container["image"] == SETTINGS.executor_image
    assert "command" not in container  # the executor's own entrypoint; no shell
    assert container["terminationMessagePolicy"] == "File"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "4Gi"},
    }
    assert container["volumeMounts"] == [
        {"name": "docker-config", "mountPath": "/kaniko/.docker", "readOnly": True}
    ]
    assert spec["volumes"] == [
        {
            "name": "docker-config",
            "secret": {
                "secretName": "registry-push",
                "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
            },
        }
    ]
    assert container["args"] == [
        "--context=git://git.example.com/acme/shop.git#refs/heads/main",
        "--dockerfile=Dockerfile",
        "--context-sub-path=services/checkout",
        "--destination=registry.example.com:5000/acme/checkout:1.4.2",
        "--destination=registry.example.com:5000/acme/checkout:latest",
        "--build-arg=GO_FLAGS=-trimpath --x=1",
        "--build-arg=VERSION=1.4.2",
        "--target=runtime",
        "--cache=true",
        "--digest-file=/dev/termination-log",
    ]


def test_same_run_same_pod_other_run_other_pod() -> None:
    assert pod_name("checkout", "run-1") == pod_name("checkout", "run-1")
    assert pod_name("checkout", "run-1") != pod_name("checkout", "run-2")
    long = pod_name("a" * 63, "run-1")
    assert len(long) <= 63 and long.startswith("build-aaa")
    # same name, different build: the spec annotation tells them apart
    one = build_pod_manifest(BUILD, SETTINGS)["metadata"]["annotations"]["opsdag.io/build-spec"]
    two = build_pod_manifest(replace(BUILD, target="debug"), SETTINGS)["metadata"]["annotations"][
        "opsdag.io/build-spec"
    ]
    assert one != two


def test_cache_off_and_claim_mount() -> None:
    build = replace(
        BUILD, cache=False, context="dir:///workspace/shop", context_claim="ctx", context_sub_path=None
    )
    manifest = build_pod_manifest(build, SETTINGS)
    assert "--cache=false" in manifest["spec"]["containers"][0]["args"]
    assert {"name": "context", "mountPath": "/workspace", "readOnly": True} in manifest["spec"]["containers"][
        0
    ]["volumeMounts"]
    assert {"name": "context", "persistentVolumeClaim": {"claimName": "ctx", "readOnly": True}} in manifest[
        "spec"
    ]["volumes"]


def test_split_reference() -> None:
    assert split_reference("localhost:5000/demo/app:v1") == ("localhost:5000/demo/app", "v1")
    assert split_reference("app:1.0") == ("app", "1.0")


@pytest.mark.parametrize(
    "change, field",
    [
        ({"context": "http://example.com/ctx.tar.gz"}, "context: 'http://"),
        ({"context": "git://user:token@git.example.com/acme/shop.git"}, "credentials in the URL are refused"),
        ({"context": "git://git.example.com/a b"}, "context:"),
        ({"context": "dir:///workspace/shop"}, "dir:// context must be under /workspace"),
        ({"context": "dir:///etc", "context_claim": "ctx"}, "dir:// context must be under /workspace"),
        ({"context": "dir:///workspace/../etc", "context_claim": "ctx"}, "dir:// context"),
        ({"context_claim": "ctx"}, "context_claim: only a dir:// context"),
        ({"dockerfile": "../Dockerfile"}, "dockerfile:"),
        ({"dockerfile": "/etc/passwd"}, "dockerfile:"),
        ({"context_sub_path": "a/../../b"}, "context_sub_path:"),
        ({"destinations": ()}, "destinations: at least one"),
        ({"destinations": ("registry.example.com/acme/checkout",)}, "has no tag"),
        ({"destinations": ("registry.example.com/acme/checkout@sha256:" + "0" * 64,)}, "destinations:"),
        ({"destinations": ("registry.example.com/Acme/checkout:1",)}, "not a valid repository"),
        ({"destinations": ("checkout:-x",)}, "not a valid tag"),
        ({"destinations": ("checkout:1 --insecure",)}, "not a valid tag"),
        ({"build_args": {"A-B": "1"}}, "build_args: 'A-B'"),
        ({"build_args": {"A": "x\n--insecure"}}, "build_args: A"),
        ({"target": "--insecure"}, "target:"),
        ({"service": "Checkout"}, "service: 'Checkout'"),
        ({"run_id": ""}, "run_id:"),
    ],
)
def test_bad_build_refused(change: dict, field: str) -> None:
    with pytest.raises(BuildPodError, match=None) as caught:
        build_pod_manifest(replace(BUILD, **change), SETTINGS)
    assert field in str(caught.value)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"executor_image": ""}, "executor_image: '': set the Kaniko-compatible executor image"),
        ({"namespace": "Builds"}, "namespace:"),
        ({"registry_secret": "push creds"}, "registry_secret:"),
        ({"memory_request": "lots"}, "memory_request:"),
        ({"timeout_seconds": 0}, "timeout_seconds:"),
        ({"cache_repo": "https://x"}, "cache_repo:"),
    ],
)
def test_bad_settings_refused(change: dict, field: str) -> None:
    with pytest.raises(BuildPodError) as caught:
        build_pod_manifest(BUILD, replace(SETTINGS, **change))
    assert field in str(caught.value)


def test_executor_args_have_no_shell() -> None:
    args = executor_args(replace(BUILD, build_args={"A": "$(rm -rf /); `x`"}), SETTINGS)
    assert "--build-arg=A=$(rm -rf /); `x`" in args  # passed as one token, never interpreted


# --- reading a pod's outcome (pure) --------------------------------------------------------

T0 = datetime(2026, 11, 30, 2, 0, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 30, 2, 0, 42, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32


def _pod(phase: str | None, state: V1ContainerState | None = None, reason: str | None = None) -> V1Pod:
    statuses = None
    if state is not None:
        statuses = [
            V1ContainerStatus(name="build", image="x", image_id="", ready=False, restart_count=0, state=state)
        ]
    return V1Pod(status=V1PodStatus(phase=phase, container_statuses=statuses, reason=reason))


@pytest.mark.parametrize(
    "pod, expected",
    [
        (_pod(None), PodOutcome("pending")),
        (
            _pod("Pending", V1ContainerState(waiting=V1ContainerStateWaiting(reason="ContainerCreating"))),
            PodOutcome("pending", "ContainerCreating"),
        ),
        (
            _pod("Running", V1ContainerState(running=V1ContainerStateRunning(started_at=T0))),
            PodOutcome("running"),
        ),
        (
            _pod(
                "Succeeded",
                V1ContainerState(
                    terminated=V1ContainerStateTerminated(
                        exit_code=0, reason="Completed", message=DIGEST, started_at=T0, finished_at=T1
                    )
                ),
            ),
            PodOutcome("succeeded", "Completed", 0, DIGEST, 42.0),
        ),
        (
            _pod(
                "Failed",
                V1ContainerState(
                    terminated=V1ContainerStateTerminated(
                        exit_code=1, reason="Error", started_at=T0, finished_at=T1
                    )
                ),
            ),
            PodOutcome("failed", "Error", 1, None, 42.0),
        ),
        (
            _pod(
                "Pending",
                V1ContainerState(
                    waiting=V1ContainerStateWaiting(
                        reason="ImagePullBackOff", message="Back-off pulling image"
                    )
                ),
            ),
            PodOutcome("failed", "ImagePullBackOff", None, "Back-off pulling image"),
        ),
        (_pod("Failed", reason="DeadlineExceeded"), PodOutcome("failed", "DeadlineExceeded")),
        (
            _pod("Succeeded"),
            PodOutcome(
                "failed",
                "NoContainerStatus",
                None,
                "the pod succeeded without a status for container 'build'",
            ),
        ),
    ],
    ids=["new", "creating", "running", "succeeded", "failed", "image-pull", "deadline", "no-status"],
)
def test_pod_outcome(pod: V1Pod, expected: PodOutcome) -> None:
    assert pod_outcome(pod) == expected


@pytest.mark.parametrize(
    "message", ["", "sha256:abc", "sha256:" + "AB" * 32, "error: push refused", "sha512:" + "ab" * 64]
)
def test_malformed_digest_refused(message: str) -> None:
    with pytest.raises(KanikoBuildError, match="not a digest") as caught:
        read_digest(PodOutcome("succeeded", "Completed", 0, message), "build-x-1")
    assert repr(message) in str(caught.value)


def test_digest_read_with_trailing_newline() -> None:
    assert read_digest(PodOutcome("succeeded", "Completed", 0, DIGEST + "\n"), "p") == DIGEST

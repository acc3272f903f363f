"""The in-cluster builder against the Kubernetes emulator, over HTTP, through ``kubernetes_default``.

kmock's emulator stores the pods; ``BuildPodController`` plays the kubelet (status and
termination message, build logs). The builder runs exactly as in a task: the
cncf-kubernetes provider's ``KubernetesHook`` reads the connection from
``AIRFLOW_CONN_KUBERNETES_DEFAULT`` (its ``kube_config`` extra points at the emulator).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import threading
from collections.abc import Iterator
from uuid import uuid4

import kubernetes_validate
import pytest
from kubernetes.client.exceptions import ApiException
from support.kube_controller import BuildBehaviour, BuildPodController, KubeEmulator, digest_for
from support.waiting import wait_for

from opsdag.builders.kaniko_builder import (
    BuildPodTrigger,
    KanikoBuilder,
    KanikoBuildError,
    KanikoBuildFailed,
    PodOutcome,
)
from opsdag.builders.kaniko_pod import KanikoBuild, KanikoSettings, build_pod_manifest, pod_name

pytestmark = pytest.mark.integration

NAMESPACE = "builds"
SETTINGS = KanikoSettings(
    executor_image="registry.example.com/tools/kaniko-executor:v1.25.0",
    namespace=NAMESPACE,
    registry_secret="registry-push",
)


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeEmulator]:
    with KubeEmulator(NAMESPACE) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def controller(kube: KubeEmulator) -> Iterator[BuildPodController]:
    played = BuildPodController(kube, namespace=NAMESPACE).start()
    yield played
    played.stop()
    assert played.errors == []


@pytest.fixture
def cluster(
    kube: KubeEmulator, controller: BuildPodController, monkeypatch: pytest.MonkeyPatch
) -> KubeEmulator:
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", kube.connection_json())
    return kube


def _build(**changes: object) -> KanikoBuild:
    values: dict = dict(
        service="checkout",
        run_id=f"manual__{uuid4()}",
        context="git://git.example.com/acme/shop.git#refs/heads/main",
        destinations=("registry.example.com:5000/acme/checkout:1.4.2",),
        build_args={"VERSION": "1.4.2"},
        cache=True,
    )
    values.update(changes)
    return KanikoBuild(**values)  # type: ignore[arg-type]


def _builder(**changes: object) -> KanikoBuilder:
    values: dict = dict(settings=SETTINGS, poll_interval=0.05, timeout=20)
    values.update(changes)
    return KanikoBuilder(**values)  # type: ignore[arg-type]


def _exists(kube: KubeEmulator, name: str) -> bool:
    """The pod exists and is not being deleted."""
    try:
        pod = kube.core_v1().read_namespaced_pod(name, NAMESPACE)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return pod.metadata.deletion_timestamp is None


def test_digest_read_back(cluster: KubeEmulator, controller: BuildPodController) -> None:
    build = _build()
    name = pod_name("checkout", build.run_id)

    result = _builder().build(build)

    assert result.digest == digest_for(name)
    assert result.image == f"registry.example.com:5000/acme/checkout@{digest_for(name)}"
    assert (result.pod_name, result.namespace, result.adopted) == (name, NAMESPACE, False)
    assert 0 <= result.seconds < 5
    # the pod the API received is exactly the manifest, and a valid Pod of Kubernetes 1.33
    (sent,) = cluster.created_bodies(name)
    assert sent == build_pod_manifest(build, SETTINGS)
    assert kubernetes_validate.validate(sent, "1.33.0", strict=True) == "1.33"
    assert not _exists(cluster, name), "the pod is deleted afterwards"


def test_failure_reports_reason_exit_code_and_logs(
    cluster: KubeEmulator, controller: BuildPodController
) -> None:
    build = _build()
    name = pod_name("checkout", build.run_id)
    log = "".join(f"INFO[00{i:02d}] step {i}\n" for i in range(60))
    log += "error building image: error building stage: failed to execute command: exit status 2\n"
    controller.expect(name, BuildBehaviour(exit_code=1, reason="Error", logs=log))

    with pytest.raises(KanikoBuildFailed) as caught:
        _builder(log_lines=5).build(build)

    failure = caught.value
    assert (failure.reason, failure.exit_code, failure.pod) == ("Error", 1, name)
    assert failure.log_tail.splitlines() == log.splitlines()[-5:]
    assert "reason Error, exit code 1" in str(failure)
    assert "failed to execute command: exit status 2" in str(failure)
    assert not _exists(cluster, name), "delete_pod='always' deletes a failed pod too"


def test_retry_adopts_the_running_pod(cluster: KubeEmulator, controller: BuildPodController) -> None:
    """A first try dies while the build runs (here: gives up waiting); the retry finds its pod."""
    build = _build()
    name = pod_name("checkout", build.run_id)
    controller.expect(name, BuildBehaviour(run_seconds=2.0))

    with pytest.raises(KanikoBuildError, match="did not finish within"):
        _builder(timeout=0.5, delete_pod="never").build(build)
    assert _exists(cluster, name)

    result = _builder().build(build)

    assert result.adopted is True
    assert result.digest == digest_for(name)
    assert controller.started_pods.count(name) == 1, "one pod, never a second build"
    assert cluster.create_requests(name) == 2  # the retry's create was refused (409), then adopted
    assert not _exists(cluster, name)


def test_retry_after_success_reads_the_finished_pod(
    cluster: KubeEmulator, controller: BuildPodController
) -> None:
    build = _build()
    name = pod_name("checkout", build.run_id)
    first = _builder(delete_pod="never").build(build)

    again = _builder().build(build)

    assert (again.adopted, again.digest, again.image) == (True, first.digest, first.image)
    assert controller.started_pods.count(name) == 1


def test_kept_failed_pod_is_reported_again(cluster: KubeEmulator, controller: BuildPodController) -> None:
    build = _build()
    name = pod_name("checkout", build.run_id)
    controller.expect(name, BuildBehaviour(exit_code=137, reason="OOMKilled", logs="INFO[0001] unpacking\n"))

    with pytest.raises(KanikoBuildFailed, match="reason OOMKilled, exit code 137"):
        _builder(delete_pod="on_success").build(build)
    assert _exists(cluster, name), "on_success keeps a failed pod to inspect"

    with pytest.raises(KanikoBuildFailed, match="reason OOMKilled, exit code 137") as caught:
        _builder().build(build)  # the retry adopts it, reports it, and (always) deletes it
    assert "unpacking" in caught.value.log_tail
    assert controller.started_pods.count(name) == 1
    assert not _exists(cluster, name)


@pytest.mark.parametrize(
    "message", ["Pushed registry.example.com:5000/acme/checkout:1.4.2", "sha256:1234", ""]
)
def test_malformed_termination_message_refused(
    cluster: KubeEmulator, controller: BuildPodController, message: str
) -> None:
    build = _build()
    name = pod_name("checkout", build.run_id)
    controller.expect(name, BuildBehaviour(message=message))

    with pytest.raises(KanikoBuildError, match="not a digest") as caught:
        _builder().build(build)

    assert f"found {message!r}" in str(caught.value)
    assert not isinstance(caught.value, KanikoBuildFailed)
    assert not _exists(cluster, name)


def test_image_pull_failure_reported_without_waiting_for_the_deadline(
    cluster: KubeEmulator, controller: BuildPodController
) -> None:
    build = _build()
    name = pod_name("checkout", build.run_id)
    controller.expect(name, BuildBehaviour(waiting_reason="ImagePullBackOff"))

    with pytest.raises(KanikoBuildFailed, match="reason ImagePullBackOff") as caught:
        _builder(timeout=10).build(build)

    assert "(logs unavailable: 400" in caught.value.log_tail  # the container never started
    assert not _exists(cluster, name)


def test_timeout_names_the_pod_and_deletes_it(cluster: KubeEmulator, controller: BuildPodController) -> None:
    build = _build()
    name = pod_name("checkout", build.run_id)
    controller.expect(name, BuildBehaviour(hang=True))

    with pytest.raises(
        KanikoBuildError,
        match=rf"build pod {name} \(namespace builds\) did not finish within 1 s "
        r"\(phase (Running, running|Pending, pending, ContainerCreating|None, pending)\)",  # busy: any
    ):
        _builder(timeout=1).build(build)
    assert not _exists(cluster, name)


def test_a_foreign_pod_of_the_same_name_is_left_alone(
    cluster: KubeEmulator, controller: BuildPodController
) -> None:
    build = _build()
    name = pod_name("checkout", build.run_id)
    other = build_pod_manifest(_build(run_id=build.run_id, target="debug"), SETTINGS)
    cluster.core_v1().create_namespaced_pod(NAMESPACE, other)
    wait_for(lambda: name in controller.started_pods, what="the controller to start the other pod")

    with pytest.raises(KanikoBuildError, match=f"pod {name} .* exists but is not this build"):
        _builder().build(build)

    assert _exists(cluster, name)
    cluster.core_v1().delete_namespaced_pod(name, NAMESPACE)


def test_a_retry_waits_out_its_terminating_pod(cluster: KubeEmulator, controller: BuildPodController) -> None:
    """The first try gave up and deleted its pod; the retry finds it still terminating."""
    build = _build()
    name = pod_name("checkout", build.run_id)
    controller.expect(name, BuildBehaviour(hang=True))
    first = _builder()
    first.start(build)
    wait_for(lambda: name in controller.started_pods, what="the controller to start the pod")
    first.delete(name, NAMESPACE)  # as a try that gave up does
    assert cluster.core_v1().read_namespaced_pod(name, NAMESPACE).metadata.deletion_timestamp is not None

    controller.expect(name, BuildBehaviour())
    result = _builder().build(build)

    assert result.adopted is False
    assert result.digest == digest_for(name)
    assert controller.started_pods.count(name) == 2


# --- the deferrable wait: BuildPodTrigger in an event loop, as the triggerer runs it -----------


def _first_event(trigger: BuildPodTrigger) -> dict:
    """Serialize the trigger as Airflow stores it, rebuild it, and run it to its one event."""
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))

    async def first() -> dict:
        async for event in rebuilt.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    payload = asyncio.run(asyncio.wait_for(first(), 30))
    assert json.loads(json.dumps(payload)) == payload  # plain JSON, as the triggerer stores it
    return payload


def test_deferred_build_reads_the_digest(cluster: KubeEmulator, controller: BuildPodController) -> None:
    build = _build()
    name = pod_name("checkout", build.run_id)
    builder = _builder()

    handle = builder.start(build)
    event = _first_event(builder.trigger(handle))
    result = builder.finish(handle, PodOutcome.from_event(event))

    assert event["state"] == "succeeded"
    assert result.image == f"registry.example.com:5000/acme/checkout@{digest_for(name)}"
    assert not _exists(cluster, name)


def test_deferred_build_failure_and_malformed_digest(
    cluster: KubeEmulator, controller: BuildPodController
) -> None:
    failing, malformed = _build(), _build()
    controller.expect(
        pod_name("checkout", failing.run_id),
        BuildBehaviour(exit_code=1, reason="Error", logs="error building image: boom\n"),
    )
    controller.expect(pod_name("checkout", malformed.run_id), BuildBehaviour(message="done"))
    builder = _builder()

    handle = builder.start(failing)
    with pytest.raises(KanikoBuildFailed, match="reason Error, exit code 1") as caught:
        builder.finish(handle, PodOutcome.from_event(_first_event(builder.trigger(handle))))
    assert caught.value.log_tail == "error building image: boom"

    handle = builder.start(malformed)
    with pytest.raises(KanikoBuildError, match="found 'done'"):
        builder.finish(handle, PodOutcome.from_event(_first_event(builder.trigger(handle))))


def test_deferred_build_timeout_and_vanished_pod(
    cluster: KubeEmulator, controller: BuildPodController
) -> None:
    slow, vanishing = _build(), _build()
    controller.expect(pod_name("checkout", slow.run_id), BuildBehaviour(hang=True))
    controller.expect(pod_name("checkout", vanishing.run_id), BuildBehaviour(hang=True))

    builder = _builder(timeout=1)
    handle = builder.start(slow)
    event = _first_event(builder.trigger(handle))
    assert event["state"] == "timeout"
    with pytest.raises(
        KanikoBuildError, match=r"did not finish within 1 s \(phase (Running|Pending|None), (running|pending)"
    ):
        builder.finish(handle, PodOutcome.from_event(event))
    assert not _exists(cluster, handle.pod_name)

    handle = _builder().start(vanishing)
    threading.Timer(0.5, cluster.core_v1().delete_namespaced_pod, (handle.pod_name, NAMESPACE)).start()
    event = _first_event(_builder().trigger(handle))
    assert event["state"] == "gone"
    assert (
        event["message"] == f"build pod {handle.pod_name} (namespace builds) disappeared before it finished"
    )


# --- API faults ------------------------------------------------------------------------------


def test_a_create_whose_answer_was_lost_adopts_its_own_pod(
    cluster: KubeEmulator, controller: BuildPodController
) -> None:
    """The API created the pod but answered 500: the retried create meets 409 and adopts it."""
    build = _build()
    name = pod_name("checkout", build.run_id)
    fault = cluster.fail("create", name, 500)

    result = _builder().build(build)

    assert fault.served == 1
    assert result.digest == digest_for(name)
    assert controller.started_pods.count(name) == 1


def test_transient_read_errors_are_retried(cluster: KubeEmulator, controller: BuildPodController) -> None:
    build = _build()
    name = pod_name("checkout", build.run_id)
    fault = cluster.fail("get", name, 503, times=2)

    result = _builder().build(build)

    assert fault.served == 2
    assert result.digest == digest_for(name)


def test_a_forbidden_create_stops_the_build_naming_verb_and_namespace(
    cluster: KubeEmulator, controller: BuildPodController
) -> None:
    build = _build()
    name = pod_name("checkout", build.run_id)
    cluster.fail("create", name, 403)

    with pytest.raises(KanikoBuildError) as caught:
        _builder().build(build)

    assert str(caught.value).startswith("create pods in namespace builds: 403 Forbidden: ")
    assert "injected by the test" in str(caught.value)
    assert cluster.create_requests(name) == 1, "a refusal is not retried"
    cluster.core_v1().delete_namespaced_pod(name, NAMESPACE)  # kmock stored it all the same


# --- the release's build task: the spec's kaniko settings through the deferral, to the digest ----


def test_release_build_from_the_spec_deploys_the_pod_s_digest(
    cluster: KubeEmulator, controller: BuildPodController, tmp_path
) -> None:
    """What ``BuildImageOperator`` does with builder: kaniko (start, defer, resume), from checkout's spec."""
    from dataclasses import asdict
    from datetime import UTC, datetime

    from opsdag.builders.build_pod import BuildPod
    from opsdag.builders.release_build import kaniko_build, kaniko_release_build
    from opsdag.paths import include_dir
    from opsdag.spec.loader import load_kind

    spec = load_kind(include_dir(), "services").specs["checkout"]
    build_spec = spec.image.build.model_copy(
        update={"kaniko": spec.image.build.kaniko.model_copy(update={"namespace": NAMESPACE})}
    )
    run_id = f"manual__{uuid4()}"
    builder, pod_build = kaniko_build(
        build_spec,
        service="checkout",
        run_id=run_id,
        push_repository=spec.image.repository,
        version="2.0.1",
        created=datetime(2026, 11, 30, 5, tzinfo=UTC),
        root=tmp_path,
    )
    builder.poll_interval = 0.05
    handle = builder.start(pod_build)
    # the operator defers with the handle as plain JSON and resumes with the trigger's event
    kwargs = json.loads(json.dumps(asdict(handle)))
    result = builder.finish(BuildPod(**kwargs), PodOutcome.from_event(_first_event(builder.trigger(handle))))
    built = kaniko_release_build(result, pod_build, repository=spec.image.repository, version="2.0.1")

    name = pod_name("checkout", run_id)
    assert built.image == f"registry.example.com/shop/checkout@{digest_for(name)}"
    assert (built.builder, built.version, built.pushed_to) == (
        "kaniko",
        "2.0.1",
        "registry.example.com/shop/checkout",
    )
    assert built.labels["org.opencontainers.image.version"] == "2.0.1"
    (sent,) = cluster.created_bodies(name)
    args = sent["spec"]["containers"][0]["args"]
    assert "--destination=registry.example.com/shop/checkout:2.0.1" in args
    assert "--label=org.opencontainers.image.version=2.0.1" in args
    assert sent["spec"]["volumes"][0]["secret"]["secretName"] == "checkout-push"
    assert kubernetes_validate.validate(sent, "1.33.0", strict=True) == "1.33"

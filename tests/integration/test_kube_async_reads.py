"""The Kubernetes driver's waits read through the provider's ``AsyncKubernetesHook`` in the triggerer.

Against kmock's emulator and the test controller (``KubeReleaseCluster``), through the same
``kubernetes_default`` connection as a task: ``RolloutStatusTrigger``'s reads reach the API
from the ``kubernetes_asyncio`` client (the emulator records each read's User-Agent), the
async twins decide exactly as the sync waits for the same cluster state (ready, crash-looping,
stalled, unpullable; a promotion; a rolling batch), API faults are retried and named as
``KubeApi`` names them, and the blue-green driver keeps its own reads, in a thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import kmock
import pytest
from kubernetes import client as sync_client
from kubernetes_asyncio import client as async_client
from support.kube_controller import CONTROLLER_AGENT, KubeReleaseCluster
from support.kube_fixtures import kube_fixtures
from support.waiting import wait_for

from opsdag.platforms.base import CANARY, PlatformError, Readiness
from opsdag.platforms.kubernetes.api import KubeApi, KubeApiError
from opsdag.platforms.kubernetes.async_api import AsyncKubeApi
from opsdag.platforms.kubernetes.bluegreen import BlueGreenDriver
from opsdag.platforms.kubernetes.driver import KubernetesDriver
from opsdag.platforms.registry import driver_for
from opsdag.spec.service import ServiceSpec
from opsdag.triggers.rollout import RolloutStatusTrigger

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
ROUTER = {"kind": "gateway-api", "http_route": "checkout"}
REPLICAS = 2


class ReadLog:
    """The User-Agent of every read (get, list) the emulator serves while ``recording``."""

    def __init__(self) -> None:
        self.recording = False
        self.reads: list[tuple[str, str]] = []  # (resource, User-Agent)
        self._lock = threading.Lock()

    def __call__(self, request: kmock.Request) -> Any:
        agent = request.headers.get("User-Agent", "")
        if self.recording and agent != CONTROLLER_AGENT and request.resource is not None:
            with self._lock:
                self.reads.append((request.resource.plural or "", agent))
        raise NotImplementedError  # not an answer: the emulator serves it

    def agents(self) -> set[str]:
        with self._lock:
            return {agent for _, agent in self.reads}


def record_reads(started: KubeReleaseCluster) -> None:
    """Every read the emulator serves, with its User-Agent, in ``started.read_log``."""
    started.read_log = ReadLog()  # type: ignore[attr-defined]
    assert started.kube.emulator is not None
    for action in (kmock.action.FETCH, kmock.action.LIST):
        started.kube.emulator[action] << started.read_log  # type: ignore[attr-defined]


cluster, kube = kube_fixtures(replicas=REPLICAS, prepare=record_reads)


def the_driver(kube: KubeReleaseCluster, spec: ServiceSpec | None = None) -> KubernetesDriver:
    driver = driver_for(spec or kube.spec(ROUTER))
    assert type(driver) is KubernetesDriver
    driver.poll_interval = 0.05
    return driver


def agreed(sync_read: Callable[[], Readiness], async_read: Callable[[], Awaitable[Readiness]]) -> Readiness:
    """The async read, once two sync reads around it agree (the cluster did not move in between)."""
    for _ in range(50):
        before = sync_read()
        during = asyncio.run(async_read())  # type: ignore[arg-type]
        after = sync_read()
        if before == after:
            assert during == before, (during, before)
            return during
        time.sleep(0.05)
    raise AssertionError("the cluster never held still over three reads")


def first_event(trigger: RolloutStatusTrigger, log: ReadLog) -> dict[str, Any]:
    log.reads.clear()
    log.recording = True
    try:
        return asyncio.run(anext(trigger.run())).payload
    finally:
        log.recording = False


# -- the trigger's reads go through the async client ------------------------------------------------


def test_the_trigger_reads_deployments_and_pods_through_the_async_client(kube: KubeReleaseCluster) -> None:
    log: ReadLog = kube.read_log  # type: ignore[attr-defined]
    sync_agent, async_agent = sync_client.ApiClient().user_agent, _async_agent()
    assert sync_agent != async_agent, "the two clients must be told apart by their User-Agent"
    spec = kube.spec(ROUTER)
    service = spec.model_dump(mode="json")
    driver = the_driver(kube, spec)
    driver.start(kube.image("1.1.0"), 2)
    wait_for(lambda: driver.readiness().ready, 20, what="the canary ready")

    trigger = RolloutStatusTrigger(service=service, image=kube.image("1.1.0"), timeout_at=time.time() + 30)
    event = first_event(trigger, log)
    assert event["status"] == "ready", event
    assert {resource for resource, _ in log.reads} == {"deployments", "pods"}, log.reads
    assert log.agents() == {async_agent}, log.reads  # not one read from the blocking client

    assert driver.promote_start() is not None  # the stable Deployment rolls to 1.1.0
    promotion = RolloutStatusTrigger(
        service=service,
        image=kube.image("1.1.0"),
        timeout_at=time.time() + 30,
        poll_interval=0.1,
        promotion=True,
    )
    event = first_event(promotion, log)
    assert event["status"] == "ready", event
    assert log.reads and log.agents() == {async_agent}, log.reads
    driver.promote_finish()


def _async_agent() -> str:
    async def agent() -> str:
        async with async_client.ApiClient() as api_client:
            return api_client.user_agent

    return asyncio.run(agent())


# -- the same verdicts as the sync reads ----------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("1.1.0", "ready"),
        ("1.4.0-crash", "CrashLoopBackOff"),
        ("1.2.0", "ImagePullBackOff"),  # in the registry, but the kubelet cannot pull it
        ("9.9.9", "has no tag 9.9.9"),  # not in the registry: failed before any kubelet tries
        ("1.5.0-stall", "ProgressDeadlineExceeded"),
    ],
)
def test_async_and_sync_readiness_agree_for_the_same_cluster_state(
    kube: KubeReleaseCluster, tag: str, expected: str
) -> None:
    driver = the_driver(kube)
    kube.controller.unpullable.add(kube.image("1.2.0"))
    if tag == "1.5.0-stall":
        kube.controller.progress_deadline = 1.5
    driver.start(kube.image(tag), 2)
    if tag == "1.5.0-stall":  # running, not ready, not failed yet: still the same verdict
        starting = agreed(driver.readiness, driver.readiness_async)
        assert not starting.ready and not starting.failed, starting

    def settled() -> Readiness | None:
        readiness = agreed(driver.readiness, driver.readiness_async)
        return readiness if readiness.ready or readiness.failed else None

    verdict = wait_for(settled, 20, 0.1, what=f"{tag} ready or failed")
    if expected == "ready":
        assert verdict.ready, verdict
    else:
        assert verdict.failed and expected in verdict.reason, verdict
    driver.remove(CANARY)


def test_async_and_sync_promote_and_rolling_waits_agree(kube: KubeReleaseCluster) -> None:
    driver = the_driver(kube)
    driver.start(kube.image("1.1.0"), 2)
    wait_for(lambda: driver.readiness().ready, 20, what="the canary ready")
    driver.promote_start()
    promoted = wait_for(
        lambda: (r := agreed(driver.promote_readiness, driver.promote_readiness_async)).ready and r,
        20,
        what="the promotion's rollout done",
    )
    assert "2 of 2 replicas updated and available" in promoted.reason, promoted
    driver.promote_finish()
    kube.reset()

    raw = kube.spec(ROUTER).model_dump(mode="json", exclude_none=True)
    raw["platform"]["replicas"], raw["strategy"] = REPLICAS, "rolling"
    raw["rolling"] = {"max_surge": 1, "max_unavailable": 0, "bake": "1m"}
    rolling = the_driver(kube, ServiceSpec.model_validate(raw))
    image, since = kube.image("1.1.0"), time.time()
    rolling.roll(image, 1, REPLICAS)
    batch = wait_for(
        lambda: (
            (
                r := agreed(
                    lambda: rolling.roll_readiness(image, 1, since),
                    lambda: rolling.roll_readiness_async(image, 1, since),
                )
            ).ready
            and r
        ),
        20,
        what="the first batch ready",
    )
    assert "1 of 1 new replica(s) ready" in batch.reason, batch
    log: ReadLog = kube.read_log  # type: ignore[attr-defined]
    trigger = RolloutStatusTrigger(
        service=raw, image=image, timeout_at=time.time() + 30, updated=1, started_at=since
    )
    event = first_event(trigger, log)  # the batch's wait, as the release defers it
    assert event["status"] == "ready", event
    assert {resource for resource, _ in log.reads} == {"deployments", "replicasets", "pods"}, log.reads
    assert log.agents() == {_async_agent()}, log.reads
    assert rolling.abort_roll() is not None


# -- faults: retried, and named as KubeApi names them -----------------------------------------------


def test_server_errors_are_retried_and_a_403_is_named_as_the_sync_api_names_it(
    kube: KubeReleaseCluster,
) -> None:
    driver = the_driver(kube)
    driver.start(kube.image("1.1.0"), 2)
    wait_for(lambda: driver.readiness().ready, 20, what="the canary ready")
    unavailable = kube.kube.fail("get", "checkout-canary", 500, times=2)
    throttled = kube.kube.fail("list", "pods", 503, times=2)
    assert asyncio.run(driver.readiness_async()).ready
    assert (unavailable.served, throttled.served) == (2, 2)

    kube.kube.fail("get", "checkout-canary", 403, times=20)
    with pytest.raises(KubeApiError) as sync_refusal:
        driver.readiness()
    with pytest.raises(KubeApiError) as async_refusal:
        asyncio.run(driver.readiness_async())
    message = str(async_refusal.value)
    assert message == str(sync_refusal.value) and async_refusal.value.status == 403
    assert message.startswith("get deployments/checkout-canary in namespace shop: 403 Forbidden"), message
    assert "needs the RBAC verb 'get' on deployments" in message

    settings = {"conn_id": "kubernetes_default", "namespace": "shop", "attempts": 3, "backoff": 0.01}
    endless = kube.kube.fail("list", "replicasets", 500, times=20)
    with pytest.raises(KubeApiError, match=r"^list replicasets in namespace shop: 500 ") as sync_gave_up:
        KubeApi(**settings).list("replicasets", {"app": "checkout"})
    api = AsyncKubeApi(**settings)
    with pytest.raises(KubeApiError) as gave_up:
        asyncio.run(api.list("replicasets", {"app": "checkout"}))
    assert str(gave_up.value) == str(sync_gave_up.value) and gave_up.value.status == 500
    assert endless.served == 6  # three tries each
    with kube.kube._faults_lock:
        kube.kube.faults.clear()
    assert asyncio.run(api.get("deployments", "no-such")) is None
    missing = KubernetesDriver(namespace="shop", deployment="nope")
    with pytest.raises(PlatformError, match=r"^get deployments/nope in namespace shop: not found"):
        asyncio.run(missing.stable_deployment_async())
    driver.remove(CANARY)


# -- the blue-green driver keeps its own reads --------------------------------------------------


def test_the_blue_green_driver_gets_no_twin_that_reads_the_plain_deployments(
    kube: KubeReleaseCluster,
) -> None:
    """Its waits read colours: its twins are WorkloadDriver's, its own sync reads in a thread."""
    log: ReadLog = kube.read_log  # type: ignore[attr-defined]
    plain = the_driver(kube)
    colours = BlueGreenDriver(namespace="shop", deployment="checkout", active_service="checkout")
    waits = ("readiness_async", "roll_readiness_async", "promote_readiness_async")
    assert not any(getattr(BlueGreenDriver, w) is getattr(KubernetesDriver, w) for w in waits)
    # checkout here is no blue-green service: the colours' read refuses it, the plain read would not.
    assert asyncio.run(plain.readiness_async()).reason == "no canary Deployment is running"
    with pytest.raises(PlatformError, match="selects no") as sync_refusal:
        colours.readiness()
    log.reads.clear()
    log.recording = True
    try:
        with pytest.raises(PlatformError, match="selects no") as async_refusal:
            asyncio.run(colours.readiness_async())
    finally:
        log.recording = False
    assert str(async_refusal.value) == str(sync_refusal.value)
    assert log.reads and log.agents() == {sync_client.ApiClient().user_agent}, log.reads
    assert asyncio.run(colours.promote_readiness_async()) == Readiness(True, reason="promoted in one step")

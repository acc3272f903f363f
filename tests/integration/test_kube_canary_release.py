"""A canary release on Kubernetes through the release's own operators, for each canary router.

The tasks of ``release__checkout``'s canary group run in the DAG's order against kmock's
emulator and the test Deployment controller (``KubeReleaseCluster``): ``preflight``,
``canary.deploy`` (deferred: its ``RolloutStatusTrigger`` is run as the triggerer runs it,
rebuilt from its serialized form, and the task resumed with the event), each stage's
``set_weight``, ``promote`` (deferred or not), ``rollback``. Each task that changes
something runs twice, as a retried task does, and must leave what one run left. The
routers: ``gateway-api`` (the HTTPRoute's backend weights), ``nginx`` (a canary Ingress)
and ``replica-ratio`` (canary replicas behind the shared Service of
``support.kube_ratio_support``); one cluster serves all three.

What a user would notice is checked on the objects themselves (every object a release
may touch, compared whole with those before, without what the API server and the
controller own), on the weights read back and on the messages.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, TaskDeferred
from support.kube_controller import KubeReleaseCluster
from support.kube_fixtures import kube_fixtures
from support.kube_ratio_support import SHARED_SERVICE, ratio_router, shared_service
from support.release_task import ReleaseTaskInstance

from opsdag.operators.preflight import ReleasePreflightOperator
from opsdag.operators.rollback import RollbackOperator
from opsdag.operators.traffic import SetWeightOperator
from opsdag.operators.workload import PostPromotionCheckOperator, PromoteOperator, StartVersionOperator
from opsdag.platforms.base import PlatformError
from opsdag.spec.service import ServiceSpec
from opsdag.strategies.stages import canary_stages

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ROUTERS: dict[str, dict[str, Any]] = {
    "gateway-api": {"kind": "gateway-api", "http_route": "checkout"},
    "nginx": {"kind": "nginx", "ingress": "checkout"},
    # at 100 % a ratio gives the canary its most replicas: 2 beside the stable's 2, not 10
    "replica-ratio": ratio_router(max_canary_replicas=2),
}
REVISION = "deployment.kubernetes.io/revision"
# Every object a canary release may create or change, whichever the router.
OBJECTS = [
    ("deployments", "checkout"),
    ("deployments", "checkout-canary"),
    ("services", "checkout"),
    ("services", "checkout-canary"),
    ("services", SHARED_SERVICE),
    ("ingresses", "checkout"),
    ("ingresses", "checkout-canary"),
    ("httproutes", "checkout"),
]
# The router's writes at the first stage and at the next, as (verb, object name) for KubeEmulator.fail.
STAGE_WRITES = {
    "gateway-api": [("patch", "checkout")] * 2,  # the HTTPRoute's weights
    # the canary Service and Ingress created, then the Ingress's weight patched
    "nginx": [("create", "checkout-canary"), ("patch", "checkout-canary")],
    "replica-ratio": [("patch", "checkout-canary")] * 2,  # the canary Deployment's replicas
}
# The router's write at the second stage whose answer is lost (a read timeout): (resource, name).
LOST_ANSWER = {
    "gateway-api": ("httproutes", "checkout"),
    "nginx": ("ingresses", "checkout-canary"),
    "replica-ratio": ("deployments", "checkout-canary"),
}
# A write only this router needs, as (verb, resource) for the access reviews, and its full name.
ROUTER_VERB = {
    "gateway-api": ("patch", "httproutes", "httproutes.gateway.networking.k8s.io"),
    "nginx": ("create", "ingresses", "ingresses.networking.k8s.io"),
    "replica-ratio": ("patch", "deployments", "deployments.apps"),
}
# The object the router routes through, as its platform.router field and resource.
ROUTED = {
    "gateway-api": ("http_route", "httproutes"),
    "nginx": ("ingress", "ingresses"),
    "replica-ratio": ("service", "services"),
}


cluster, kube = kube_fixtures(prepare=shared_service)  # the replica ratio's Service; the others leave it


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """What preflight asks (``vector(1)``): a real Prometheus, with nothing to scrape."""
    from prom_fixtures import start_prometheus

    started = start_prometheus(tmp_path_factory.mktemp("prometheus"), [])
    yield started
    started.stop()


@pytest.fixture(autouse=True)
def prometheus_connection(prometheus: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS_DEFAULT", prometheus.connection_env())


@pytest.fixture(params=list(ROUTERS))
def router(request: pytest.FixtureRequest) -> str:
    return request.param


# -- the objects -------------------------------------------------------------------------------


def applied(obj: dict[str, Any] | None, server_fields: bool = True) -> dict[str, Any] | None:
    """An object as the API holds it, without what the API server and the controller own there.

    ``server_fields``: with the ``uid`` and ``creationTimestamp`` (an object recreated gets
    new ones); the controller gives a new Deployment its uid a moment after its creation.
    """
    if obj is None:
        return None
    owned = {"resourceVersion", "generation", "managedFields"}
    if not server_fields:
        owned |= {"uid", "creationTimestamp"}
    meta = {k: v for k, v in obj["metadata"].items() if k not in owned}
    annotations = {k: v for k, v in (meta.pop("annotations", None) or {}).items() if k != REVISION}
    if annotations:
        meta["annotations"] = annotations
    return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": meta}


def snapshot(kube: KubeReleaseCluster, server_fields: bool = True) -> dict[str, Any]:
    """Every object a canary release may touch (None: there is none)."""
    return {f"{r}/{n}": applied(kube.get(r, n), server_fields) for r, n in OBJECTS}


def promoted(before: dict[str, Any], image: str) -> dict[str, Any]:
    """``before`` with the stable Deployment's image, and nothing else, changed to ``image``."""
    expected = copy.deepcopy(before)
    expected["deployments/checkout"]["spec"]["template"]["spec"]["containers"][0]["image"] = image
    return expected


def weight_in_objects(kube: KubeReleaseCluster, router: str) -> Any:
    """What the router wrote where its proxy reads it: the route's weights, the canary Ingress's
    annotation, or the canary Deployment's replicas."""
    if router == "gateway-api":
        refs = kube.get("httproutes", "checkout")["spec"]["rules"][0]["backendRefs"]
        return {ref["name"]: ref.get("weight") for ref in refs}
    if router == "nginx":
        canary = kube.get("ingresses", "checkout-canary")
        return canary and canary["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"]
    canary = kube.get("deployments", "checkout-canary")
    return canary and canary["spec"]["replicas"]


# What each stage leaves in the router's objects (stable: 2 replicas; a ratio's canary starts with 1).
STAGE_OBJECTS = {
    "gateway-api": {w: {"checkout": 100 - w, "checkout-canary": w} for w in (5, 25, 100)},
    "nginx": {w: str(w) for w in (5, 25, 100)},
    "replica-ratio": {5: 1, 25: 1, 100: 2},
}
RATIO_SAID = {
    5: "asked 5 %, got 1 of 3 replicas = 33.3 %",
    25: "asked 25 %, got 1 of 3 replicas = 33.3 %",
    100: "asked 100 %, got 2 of 4 replicas = 50 %",
}


def answer_lost_once(monkeypatch: pytest.MonkeyPatch, resource: str, name: str) -> list[str]:
    """The release's next PATCH of ``resource/name`` reaches the API, which applies it, and its
    answer never comes back: the client's read times out. The paths it happened to, once."""
    from kubernetes.client import ApiClient
    from support.kube_controller import CONTROLLER_AGENT
    from urllib3.exceptions import ReadTimeoutError

    lost: list[str] = []
    original = ApiClient.call_api

    def call_api(self: ApiClient, resource_path: str, method: str, *args: Any, **kwargs: Any) -> Any:
        answer = original(self, resource_path, method, *args, **kwargs)
        if (
            not lost
            and method == "PATCH"
            and resource_path.endswith(f"/{resource}/{name}")
            and self.user_agent != CONTROLLER_AGENT
        ):
            lost.append(resource_path)
            raise ReadTimeoutError(None, resource_path, "Read timed out. (read timeout=30.0)")
        return answer

    monkeypatch.setattr(ApiClient, "call_api", call_api)
    return lost


# -- the release's tasks -----------------------------------------------------------------------


class CanaryRelease:
    """checkout's canary release of ``image`` through ``router``, task by task, as the DAG runs it."""

    def __init__(self, kube: KubeReleaseCluster, router: str, image: str, **router_fields: Any) -> None:
        self.kube = kube
        self.router = router
        self.spec: ServiceSpec = kube.spec({**ROUTERS[router], **router_fields})
        self.image = image
        self.ti = ReleaseTaskInstance({"image": image, "strategy": "canary", "dry_run": False})
        self.context = {"ti": self.ti, "params": {}}

    def task(self, operator: Any) -> Any:
        """``operator``, polling the cluster every 0.05 s rather than every 0.5 s."""
        operator.driver.poll_interval = 0.05
        for router in (operator.router, getattr(operator.driver, "router", None)):
            if hasattr(router, "poll_interval"):
                router.poll_interval = 0.05  # a replica ratio waits for its pods
        return operator

    def twice(self, run: Any) -> Any:
        """Run a task, then again as its retry: the second run leaves what the first left."""
        first = run()
        once = snapshot(self.kube, server_fields=False)
        second = run()
        assert snapshot(self.kube, server_fields=False) == once
        return first if second is None else second

    def resumed(self, operator: Any, deferred: TaskDeferred) -> Any:
        """Run the deferral's trigger as the triggerer does and resume the task with its event."""
        path, kwargs = deferred.trigger.serialize()
        if "poll_interval" in kwargs:
            kwargs["poll_interval"] = 0.1
        module, _, name = path.rpartition(".")
        trigger = getattr(importlib.import_module(module), name)(**kwargs)
        event = asyncio.run(anext(trigger.run())).payload
        next_kwargs = {**(deferred.kwargs or {}), "event": event}
        return operator.resume_execution(deferred.method_name, next_kwargs, self.context)

    def preflight(self) -> dict[str, Any]:
        return ReleasePreflightOperator(task_id="preflight", service=self.spec).execute(self.context)

    def deploy_task(self) -> StartVersionOperator:
        """``canary.deploy`` as the canary group builds it (as many instances as the stable runs)."""
        return self.task(
            StartVersionOperator(
                task_id="canary.deploy",
                service=self.spec,
                strategy="canary",
                image=self.image,
                instances=self.spec.instances(),
            )
        )

    def deploy(self) -> tuple[StartVersionOperator, TaskDeferred]:
        """``canary.deploy`` run twice (the same canary after both), deferred: its deferral."""
        operator = self.deploy_task()

        def run() -> TaskDeferred:
            with pytest.raises(TaskDeferred) as deferred:
                operator.execute(self.context)
            return deferred.value

        return operator, self.twice(run)

    def deploy_ready(self) -> dict[str, Any]:
        operator, deferred = self.deploy()
        return self.resumed(operator, deferred)

    def set_weight(self, weight: int) -> dict[str, Any]:
        operator = self.task(
            SetWeightOperator(
                task_id=f"canary.stage_{weight}.set_weight",
                service=self.spec,
                strategy="canary",
                weight=weight,
            )
        )

        def run() -> Any:  # a replica ratio's stage waits deferred while new canary pods start
            try:
                return operator.execute(self.context)
            except TaskDeferred as deferred:
                return self.resumed(operator, deferred)

        return self.twice(run)

    def promote(self) -> Any:
        """``promote``, deferrable or not: a deferral's trigger is run and the task resumed."""
        operator = self.task(PromoteOperator(task_id="promote", service=self.spec))
        operator.driver.promote_timeout = 60

        def run() -> Any:
            try:
                return operator.execute(self.context)
            except TaskDeferred as deferred:
                return self.resumed(operator, deferred)

        return self.twice(run)

    def post_promotion_check(self) -> dict[str, Any]:
        return PostPromotionCheckOperator(
            task_id="post_promotion_check", service=self.spec, image=self.image
        ).execute(self.context)

    def rollback(self) -> dict[str, Any]:
        operator = self.task(RollbackOperator(task_id="rollback", service=self.spec))
        return self.twice(lambda: operator.execute(self.context))


def checked_preflight(release: CanaryRelease) -> None:
    result = release.preflight()
    checks = {c["name"]: (c["ok"], c["detail"]) for c in result["checks"]}
    assert all(ok for ok, _ in checks.values()), checks
    assert checks["platform and router reachable"] == (True, "0 % to canary")
    image = release.kube.image("1.0.0")
    assert result["rollback_target"] == {"image": image, "instances": 2, "canary_weight": 0}


def stage_reached(release: CanaryRelease, weight: int, result: dict[str, Any]) -> None:
    """The stage's weight, as the task pushed it and as the router's objects hold it."""
    assert weight_in_objects(release.kube, release.router) == STAGE_OBJECTS[release.router][weight]
    if release.router == "replica-ratio":  # says what a whole replica gives
        assert (result["requested"], result["exact"], result["said"]) == (weight, False, RATIO_SAID[weight])
    else:
        assert (result["canary"], result["stable"], result["exact"]) == (weight, 100 - weight, True), result


# -- the cases ---------------------------------------------------------------------------------


def test_a_healthy_release_is_promoted_and_only_the_stable_image_changed(
    kube: KubeReleaseCluster, router: str
) -> None:
    new = kube.image("1.1.0")
    release = CanaryRelease(kube, router, new)
    before = snapshot(kube)
    assert [before[f"{kind}/checkout-canary"] for kind in ("deployments", "services", "ingresses")] == [
        None
    ] * 3
    checked_preflight(release)
    assert snapshot(kube) == before  # preflight changes nothing

    event = release.deploy_ready()
    assert event["status"] == "ready", event
    canary = kube.get("deployments", "checkout-canary")
    assert canary["spec"]["template"]["spec"]["containers"][0]["image"] == new
    assert canary["spec"]["replicas"] == (1 if router == "replica-ratio" else 2)
    assert release.ti.pushed["selectors"]["canary"].startswith('namespace="shop", pod=~"checkout-canary-')
    assert weight_in_objects(kube, router) in ({"checkout": None}, None, 1)  # no traffic routed yet

    for plan in canary_stages(release.spec):
        stage_reached(release, plan.weight, release.set_weight(plan.weight))
    assert [plan.weight for plan in canary_stages(release.spec)] == [5, 25, 100]

    release.promote()
    assert snapshot(kube) == promoted(before, new)
    assert release.post_promotion_check()["ok"]


def test_a_release_failing_after_a_stage_is_rolled_back_to_exactly_what_it_found(
    kube: KubeReleaseCluster, router: str
) -> None:
    release = CanaryRelease(kube, router, kube.image("1.1.0"))
    before = snapshot(kube)
    checked_preflight(release)
    assert release.deploy_ready()["status"] == "ready"
    for weight in (5, 25):
        stage_reached(release, weight, release.set_weight(weight))
    # stage_25's gate failed: the rollback task runs (trigger rule one_failed)
    result = release.rollback()
    assert result["problems"] == [], result
    assert (result["stable_image"], result["stable_instances"]) == (kube.image("1.0.0"), 2)
    assert result["split"]["canary"] == 0
    assert snapshot(kube) == before


def test_a_stalled_rollout_fails_the_deploy_step_after_its_deadline_and_is_rolled_back(
    kube: KubeReleaseCluster, router: str
) -> None:
    stall = kube.image("1.5.0-stall")  # running, never ready
    release = CanaryRelease(kube, router, stall)
    before = snapshot(kube)
    checked_preflight(release)
    kube.controller.progress_deadline = 1.5  # seconds, for progressDeadlineSeconds: 600
    # The test controller times a rollout from when it first saw (name, generation): forget the
    # earlier tests' canaries (generation 1 too), as a Deployment created anew starts afresh.
    kube.controller._progress.clear()
    started = time.monotonic()
    operator, deferred = release.deploy()
    with pytest.raises(AirflowFailException) as failed:
        release.resumed(operator, deferred)
    assert time.monotonic() - started >= 1.5
    message = str(failed.value)
    assert message.startswith(f"{stall} failed: "), message
    assert "ProgressDeadlineExceeded after 600 s" in message, message
    assert release.ti.pushed["error"] == f"AirflowFailException: {message}"
    assert "selectors" not in release.ti.pushed
    result = release.rollback()
    assert result["problems"] == [] and result["split"]["canary"] == 0, result
    assert snapshot(kube) == before


def test_server_errors_conflicts_and_timeouts_on_the_router_s_writes_are_retried_to_the_stage_s_weight(
    kube: KubeReleaseCluster, router: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = CanaryRelease(kube, router, kube.image("1.1.0"))
    before = snapshot(kube)
    checked_preflight(release)
    assert release.deploy_ready()["status"] == "ready"
    (verb, name), (next_verb, next_name) = STAGE_WRITES[router]
    unavailable = kube.kube.fail(verb, name, 500, times=1)
    conflict = kube.kube.fail(verb, name, 409, times=1)
    stage_reached(release, 5, release.set_weight(5))
    assert (unavailable.served, conflict.served) == (1, 1)
    unavailable = kube.kube.fail(next_verb, next_name, 503, times=2)
    with monkeypatch.context() as patched:
        lost = answer_lost_once(patched, *LOST_ANSWER[router])  # then, applied, the answer lost
        stage_reached(release, 25, release.set_weight(25))
    assert unavailable.served == 2 and len(lost) == 1
    assert release.rollback()["problems"] == []
    assert snapshot(kube) == before


def test_a_forbidden_verb_or_a_missing_object_stops_the_release_at_preflight(
    kube: KubeReleaseCluster, router: str
) -> None:
    before = snapshot(kube)
    release = CanaryRelease(kube, router, kube.image("1.1.0"))
    verb, resource, full_name = ROUTER_VERB[router]
    kube.kube.forbidden.add((verb, resource))
    with pytest.raises(AirflowFailException) as refused:
        release.preflight()
    kube.kube.forbidden.clear()
    message = str(refused.value)
    assert message.startswith("release refused by preflight: platform and router reachable: "), message
    assert (
        f"the account of connection 'kubernetes_default' may not, in namespace shop: {verb} {full_name} "
        "(no RBAC rule allows it (test))" in message
    ), message
    assert "rollback target recorded: unknown" in message
    with pytest.raises(AirflowSkipException, match="nothing to roll back: the release was refused"):
        release.rollback()
    assert snapshot(kube) == before

    field, kind = ROUTED[router]
    missing = CanaryRelease(kube, router, kube.image("1.1.0"), **{field: "nowhere"})
    with pytest.raises(AirflowFailException) as refused:
        missing.preflight()
    message = str(refused.value)
    assert f"platform and router reachable: get {kind}/nowhere in namespace shop: not found" in message
    assert f"(platform.router.{field} must name the service's " in message
    assert snapshot(kube) == before


def test_a_403_on_the_first_write_fails_the_deploy_step_naming_it_and_the_rollback_restores(
    kube: KubeReleaseCluster, router: str
) -> None:
    release = CanaryRelease(kube, router, kube.image("1.1.0"))
    before = snapshot(kube)
    checked_preflight(release)
    refused = kube.kube.fail("create", "checkout-canary", 403, times=1)  # the canary Deployment
    operator = release.deploy_task()
    with pytest.raises(PlatformError) as failed:
        operator.execute(release.context)
    message = str(failed.value)
    assert refused.served == 1
    assert re.match(
        r"create deployments in namespace shop: 403 Forbidden: .*"
        r"\(the connection's account needs the RBAC verb 'create' on deployments\)$",
        message,
    ), message
    assert release.ti.pushed["error"] == f"KubeApiError: {message}"
    assert release.rollback()["problems"] == []
    assert snapshot(kube) == before

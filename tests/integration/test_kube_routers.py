"""The NGINX ingress router against kmock's emulator, and checkout's own spec through the preflight.

The Gateway API router's own cases are in test_kube_driver.py; both routers also pass the
conformance suite (tests/conformance, ``kubernetes+gateway-api`` and ``kubernetes+nginx``).
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from support.kube_controller import KubeReleaseCluster
from support.kube_fixtures import kube_fixtures
from support.kube_ratio_support import ratio_router, shared_service
from support.release_task import ReleaseTaskInstance
from support.waiting import wait_for

from opsdag import paths
from opsdag.platforms.base import CANARY, PlatformError
from opsdag.platforms.registry import driver_for, router_for
from opsdag.platforms.routers.nginx_ingress import CANARY as CANARY_ANNOTATION
from opsdag.platforms.routers.nginx_ingress import WEIGHT, NginxIngressRouter
from opsdag.spec.loader import read_yaml
from opsdag.spec.service import ServiceSpec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
NGINX = {"kind": "nginx", "ingress": "checkout"}

cluster, kube = kube_fixtures()


def objects(kube: KubeReleaseCluster) -> dict[str, Any]:
    ingress = kube.get("ingresses", "checkout") or {}
    return {
        "ingress": {"metadata": ingress["metadata"], "spec": ingress["spec"]},
        "canary": [kube.get(kind, "checkout-canary") for kind in ("ingresses", "services", "deployments")],
    }


def test_a_canary_ingress_carries_the_weight_and_goes_at_zero(kube: KubeReleaseCluster) -> None:
    spec = kube.spec(NGINX)
    driver, router = driver_for(spec), router_for(spec)
    assert isinstance(router, NginxIngressRouter) and not router.can_preview
    before = objects(kube)
    assert before["canary"] == [None, None, None]
    driver.start(kube.image("1.1.0"), 2)
    wait_for(lambda: driver.readiness().ready, 20, what="the canary ready")
    router.set_weight(5)
    router.set_weight(5)  # a retried task
    canary = kube.get("ingresses", "checkout-canary")
    assert canary is not None
    assert kubernetes_validate.validate(canary, "1.33.0", strict=True) == "1.33"
    annotations = canary["metadata"]["annotations"]
    assert (annotations[CANARY_ANNOTATION], annotations[WEIGHT]) == ("true", "5")
    backend = canary["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "checkout-canary", "port": {"number": 80}}
    assert canary["spec"]["rules"][0]["host"] == "checkout.shop.example.com"
    assert "tls" not in canary["spec"]  # the stable Ingress terminates TLS for the host
    service = kube.get("services", "checkout-canary")
    assert kubernetes_validate.validate(service, "1.33.0", strict=True) == "1.33"
    split = router.verify_weight()
    assert (split.stable, split.canary, split.exact, split.requested) == (95.0, 5.0, True, 5)
    router.set_weight(40)
    assert kube.get("ingresses", "checkout-canary")["metadata"]["annotations"][WEIGHT] == "40"
    router.set_weight(0)
    driver.remove(CANARY)
    assert objects(kube) == before


def test_promote_removes_the_canary_ingress(kube: KubeReleaseCluster) -> None:
    spec = kube.spec(NGINX)
    driver, router = driver_for(spec), router_for(spec)
    driver.poll_interval = 0.05
    before = objects(kube)
    driver.start(kube.image("1.1.0"), 2)
    wait_for(lambda: driver.readiness().ready, 20, what="the canary ready")
    router.set_weight(25)
    driver.promote()
    assert objects(kube) == before
    assert driver.status().stable.image == kube.image("1.1.0")
    assert router.verify_weight().canary == 0


def test_a_refused_canary_ingress_is_named(kube: KubeReleaseCluster) -> None:
    spec = kube.spec(NGINX)
    driver, router = driver_for(spec), router_for(spec)
    driver.start(kube.image("1.1.0"), 2)
    wait_for(lambda: driver.readiness().ready, 20, what="the canary ready")
    kube.kube.fail("create", "checkout-canary", 403, times=5)
    with pytest.raises(PlatformError, match=r"^create services in namespace shop: 403 Forbidden"):
        router.set_weight(10)
    with kube.kube._faults_lock:
        kube.kube.faults.clear()
    router.set_weight(0)
    driver.remove(CANARY)


def test_checkout_as_shipped_passes_the_release_preflight(
    kube: KubeReleaseCluster, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """include/services/checkout.yaml unchanged (nginx router): its preflight against the emulator."""
    from prom_fixtures import start_prometheus

    from opsdag.operators.preflight import ReleasePreflightOperator

    raw = read_yaml((paths.include_dir() / "services" / "checkout.yaml").read_text(encoding="utf-8"))
    spec = ServiceSpec.model_validate(raw)
    prometheus = start_prometheus(tmp_path / "prometheus", [])
    try:
        monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS_DEFAULT", prometheus.connection_env())
        ti = ReleaseTaskInstance({"image": f"{spec.image.repository}:1.1.0", "strategy": "canary"})
        result = ReleasePreflightOperator(task_id="preflight", service=spec).run({"ti": ti, "params": {}})
    finally:
        prometheus.stop()
    assert all(c["ok"] for c in result["checks"]), result["checks"]
    assert result["rollback_target"] == {"image": kube.image("1.0.0"), "instances": 2, "canary_weight": 0}


@pytest.mark.parametrize(
    "router",
    [NGINX, {"kind": "gateway-api", "http_route": "checkout"}, ratio_router()],
    ids=lambda r: r["kind"],
)
def test_every_call_of_a_release_is_allowed_by_the_documented_role(
    kube: KubeReleaseCluster, monkeypatch: pytest.MonkeyPatch, router: dict[str, str]
) -> None:
    from opsdag.platforms.kubernetes import rbac
    from opsdag.platforms.kubernetes.api import KubeApi

    if router["kind"] == "replica-ratio":
        shared_service(kube)  # its one Service in front of both tracks

    calls: set[tuple[str, str]] = set()
    original = KubeApi.request

    def recorded(self: KubeApi, verb: str, method: str, resource: str, *args: Any, **kwargs: Any) -> Any:
        calls.add((verb, resource))
        return original(self, verb, method, resource, *args, **kwargs)

    monkeypatch.setattr(KubeApi, "request", recorded)
    spec = kube.spec(router)
    driver, traffic = driver_for(spec), router_for(spec)
    driver.poll_interval = 0.05
    driver.status(), driver.rollback_target(), driver.metric_selectors(), driver.endpoints(CANARY)
    driver.start(kube.image("1.1.0"), 1)
    wait_for(lambda: driver.readiness().ready, 20, what="the canary ready")
    driver.scale(CANARY, 2)
    traffic.set_weight(10)
    traffic.verify_weight()
    driver.promote()
    driver.start(kube.image("1.2.0"), 1)
    traffic.set_weight(0)
    driver.remove(CANARY)
    assert calls and all(rbac.covers(verb, resource) for verb, resource in calls), sorted(calls)
    print(f"\n{router['kind']}: {sorted(calls)}")


def test_the_release_request_is_resolved_against_the_image_registry(kube: KubeReleaseCluster) -> None:
    """validate_request for checkout (nginx router, canary): the tag resolved to its digest, or refused."""
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowFailException

    from opsdag.operators.validate_request import ValidateRequestOperator

    operator = ValidateRequestOperator(task_id="validate_request", service=kube.spec(NGINX))

    def run(image: str) -> dict[str, Any]:
        ti = SimpleNamespace(get_dr_count=lambda dag_id, states: 0)  # no runbook acts on checkout
        return operator.run({"params": {}, "dag_run": SimpleNamespace(conf={"image": image}), "ti": ti})

    resolved = run(kube.image("1.1.0"))
    assert (resolved["image"], resolved["strategy"]) == (kube.image("1.1.0"), "canary")
    assert resolved["digest"].startswith("sha256:")
    with pytest.raises(
        AirflowFailException, match=r"image: .*registry .* has no tag 9\.9\.9 of shop/checkout"
    ):
        run(kube.image("9.9.9"))

"""``release__checkout`` end to end under ``scripts/airflow dags test``, against the Kubernetes emulator.

What runs for real: the Airflow CLI (``dags test``, a fresh Airflow home and metadata
database), the release DAG generated from checkout's spec, the Kubernetes driver and its
NGINX router talking HTTP to kmock's emulator (``KubeReleaseCluster``: a controller
playing the Deployment controller and the kubelet, and a real registry holding the
versions), and Debian's Prometheus scraping ``PodRequestExporter``, which serves
``http_requests_total{namespace, pod, status}`` for the pods the controller makes: the
gates judge checkout's own error-rate query, with the driver's ``$canary`` matcher
(``namespace="shop", pod=~"checkout-canary-<hash>-..."``), over really scraped samples.

checkout's spec is loaded from a copy of include/ (``OPSDAG_INCLUDE_DIR``) in which only
the following differ from include/services/checkout.yaml: the bakes are seconds instead of
5-10 minutes, the 25 % step asks for no approval, the metric is measured every 2 s instead
of every minute, and ``image.repository`` is the test registry's (a release's image must
belong to the service's repository, and the registry is asked whether it has the tag).
The weights, the platform and router sections, the query and its limits are as shipped.
The DAG id is ``release__checkout``. That the shipped spec itself passes the release
preflight against the emulator is tested in
tests/integration/test_kube_routers.py::test_checkout_as_shipped_passes_the_release_preflight.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.dags_test import ROOT
from support.kube_controller import KubeReleaseCluster, push_tiny_image
from support.kube_dags_test import Changes, release
from support.kube_metrics import PodRequestExporter, start_prometheus
from support.slack_server import SlackRecorder

from opsdag.platforms.routers.nginx_ingress import WEIGHT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
# Timing only: the shipped steps' weights, with seconds for minutes and no approval.
STEPS = [{"weight": 5, "bake": "8s"}, {"weight": 25, "bake": "5s"}, {"weight": 100, "bake": "5s"}]
INTERVAL = "2s"
ERRORS_TAG = "1.2.0-errors"  # pushed by this module; its pods answer 8 % of requests with 500


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeReleaseCluster]:
    started = KubeReleaseCluster(tmp_path_factory.mktemp("kube-registry"))
    try:
        push_tiny_image(started.registry.host, "shop/checkout", ERRORS_TAG)
        yield started
    finally:
        started.stop()
    assert started.controller.errors == []


@pytest.fixture(scope="module")
def prometheus(cluster: KubeReleaseCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    exporter = PodRequestExporter(cluster.kube, cluster.NAMESPACE, "checkout").start()
    exporter.error_ratio[cluster.image(ERRORS_TAG)] = 0.08
    server = start_prometheus(tmp_path_factory.mktemp("prometheus"), [exporter.target])
    try:
        server.wait_for_targets(1)
        yield server
    finally:
        server.stop()
        exporter.stop()


@pytest.fixture(scope="module")
def include(cluster: KubeReleaseCluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("include")
    shutil.copytree(ROOT / "include", copy, dirs_exist_ok=True)
    path = copy / "services" / "checkout.yaml"
    spec = yaml.safe_load(path.read_text())
    shipped = json.loads(json.dumps(spec))
    spec["image"]["repository"] = cluster.repository
    spec["canary"]["steps"] = STEPS
    for metric in spec["analysis"]["metrics"]:
        metric["interval"] = INTERVAL
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert spec["platform"] == shipped["platform"]
    assert [s["weight"] for s in spec["canary"]["steps"]] == [s["weight"] for s in shipped["canary"]["steps"]]
    return copy


@pytest.fixture(scope="module")
def slack() -> Iterator[SlackRecorder]:
    with SlackRecorder() as recorder:
        yield recorder


@pytest.fixture(scope="module")
def airflow_env(
    cluster: KubeReleaseCluster,
    prometheus: Any,
    include: Path,
    slack: SlackRecorder,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    state = tmp_path_factory.mktemp("state")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")},
        "OPSDAG_STATE_DIR": str(state),
        "OPSDAG_INCLUDE_DIR": str(include),
        "OPSDAG_SANDBOX_DIR": str(state / "no-sandbox"),  # no sandbox connections: this is Kubernetes
        "OPSDAG_REPORTS_DIR": str(state / "reports"),
        "AIRFLOW_CONN_KUBERNETES_DEFAULT": cluster.kube.connection_json(),
        "AIRFLOW_CONN_PROMETHEUS_DEFAULT": prometheus.connection_env(),
        "AIRFLOW_CONN_SLACK_DEFAULT": slack.connection_json(),  # the spec's slack section, as shipped
    }
    subprocess.run(
        [ROOT / "scripts" / "airflow", "version"], env=env, check=True, capture_output=True, timeout=180
    )
    return env


def canary_weights(kube: KubeReleaseCluster) -> Changes[str]:
    """Every ``canary-weight`` the canary Ingress ``checkout-canary`` showed while a release ran."""

    def weight() -> str | None:
        ingress = kube.get("ingresses", "checkout-canary")
        return ((ingress or {}).get("metadata", {}).get("annotations") or {}).get(WEIGHT)

    return Changes(weight)


def objects(kube: KubeReleaseCluster) -> dict[str, Any]:
    """What the team applied, as the API holds it (without what the controller writes), and any canary."""
    stable = kube.get("deployments", "checkout") or {}
    service = kube.get("services", "checkout") or {}
    ingress = kube.get("ingresses", "checkout") or {}
    return {
        "deployment": {"labels": stable["metadata"].get("labels"), "spec": stable["spec"]},
        "service": {"metadata": service["metadata"], "spec": service["spec"]},
        "ingress": {"metadata": ingress["metadata"], "spec": ingress["spec"]},
        "canary objects": {
            kind: kube.get(kind, "checkout-canary") for kind in ("deployments", "services", "ingresses")
        },
    }


def told(slack: SlackRecorder, *words: str) -> bool:
    """Whether one Slack message (the run posts before ``dags test`` ends) says all ``words``."""
    return any(all(w in m.get("text", "") for w in words) for m in slack.wait_for(1))


def stage_status(report: dict[str, Any]) -> dict[str, str]:
    return {stage["name"]: stage["status"] for stage in report["stages"]}


def test_a_healthy_version_is_promoted_and_an_erroring_one_rolled_back_at_5_percent(
    cluster: KubeReleaseCluster, airflow_env: dict[str, str], slack: SlackRecorder
) -> None:
    """Two releases in a row, as a team would make them: 1.1.0 (healthy), then 1.2.0-errors.

    The second one's canary is judged on its own pods only, although the first canary's
    series (no errors) are still within the query's 2-minute rate window.
    """
    cluster.reset()
    before = objects(cluster)
    assert before["canary objects"] == {"deployments": None, "services": None, "ingresses": None}

    with canary_weights(cluster) as weights:
        healthy = release(airflow_env, {"image": cluster.image("1.1.0"), "reason": "e2e on the emulator"})
    print(f"\nhealthy: exit {healthy.returncode} in {healthy.seconds:.0f} s; canary weights {weights.seen}")
    assert healthy.report is not None, healthy.output[-4000:]
    print(f"healthy: {healthy.report['status']}: {healthy.report['summary']}")
    assert healthy.report["status"] == "promoted", healthy.output[-4000:]
    assert stage_status(healthy.report) == {"stage_5": "passed", "stage_25": "passed", "stage_100": "passed"}
    assert weights.seen[:3] == ["5", "25", "100"], weights.seen  # ingress-nginx was told each step
    promoted = objects(cluster)
    expected = json.loads(json.dumps(before))
    expected["deployment"]["spec"]["template"]["spec"]["containers"][0]["image"] = cluster.image("1.1.0")
    assert promoted == expected  # the stable Deployment runs 1.1.0; no canary Deployment, Service, Ingress
    assert healthy.returncode == 0, healthy.output[-4000:]
    assert told(slack, "promoted", "1.1.0"), slack.messages

    slack.reset()
    with canary_weights(cluster) as weights:
        errors = release(airflow_env, {"image": cluster.image(ERRORS_TAG)})
    print(f"errors: exit {errors.returncode} in {errors.seconds:.0f} s; canary weights {weights.seen}")
    assert errors.report is not None, errors.output[-4000:]
    print(f"errors: {errors.report['status']}: {errors.report['summary']}")
    assert errors.report["status"] == "rolled_back", errors.output[-4000:]
    assert stage_status(errors.report) == {"stage_5": "failed", "stage_25": "skipped", "stage_100": "skipped"}
    # 8 %, as the canary's pods answer: the earlier canary's series (1.1.0, no errors, gone less
    # than the query's 2m rate window ago) are not counted with this one's.
    assert "error-rate 0.08 > max 0.01" in errors.report["stages"][0]["reason"], errors.report["stages"][0]
    assert "error-rate" in errors.report["summary"], errors.report["summary"]
    assert "25" not in weights.seen and "100" not in weights.seen, weights.seen  # never past 5 %
    assert objects(cluster) == promoted  # exactly as before the release: 1.1.0 stable, nothing else
    outcome = slack.wait_for(1)
    assert any("rolled back" in m.get("text", "") and "error-rate" in m.get("text", "") for m in outcome), (
        outcome
    )

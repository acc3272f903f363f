"""A blue-green ``release__checkout`` under ``scripts/airflow dags test``, against the Kubernetes emulator.

As tests/e2e/test_kube_checkout_release.py, with checkout laid out for blue-green
(``support.kube_bluegreen_objects``: ``checkout-blue`` behind ``checkout-active`` and
``checkout-preview``) and ``router: service-selector``. What runs for real: the Airflow CLI,
the release DAG generated from the spec (its bluegreen group: deploy, smoke, preview gate,
switch, post-promotion gate, scale-down delay; then promote), the blue-green driver and
router over HTTP to kmock's emulator with the test controller, and Prometheus scraping
``PodRequestExporter``: the gates judge checkout's own error-rate query on the new colour's
pods (``$canary``: ``pod=~"checkout-green-<hash>-..."``). Only the timings differ from a
team's spec: bakes and the delay in seconds, the metric measured every 2 s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from support.dags_test import ROOT
from support.kube_bluegreen_objects import ACTIVE, APP, PREVIEW, ROUTER, BlueGreenObjects
from support.kube_controller import KubeReleaseCluster, push_tiny_image
from support.kube_dags_test import Changes, release
from support.kube_metrics import PodRequestExporter, start_prometheus

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
BLUEGREEN = {"pre_promotion_bake": "6s", "post_promotion_bake": "5s", "scale_down_delay": "4s"}
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
def airflow_env(
    cluster: KubeReleaseCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    exporter = PodRequestExporter(cluster.kube, cluster.NAMESPACE, APP).start()
    exporter.error_ratio[cluster.image(ERRORS_TAG)] = 0.08
    prometheus = start_prometheus(tmp_path_factory.mktemp("prometheus"), [exporter.target])
    include = tmp_path_factory.mktemp("include")
    shutil.copytree(ROOT / "include", include, dirs_exist_ok=True)
    path = include / "services" / "checkout.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["platform"]["router"] = dict(ROUTER)
    spec["image"]["repository"] = cluster.repository
    spec["strategy"], spec["bluegreen"] = "bluegreen", BLUEGREEN
    for metric in spec["analysis"]["metrics"]:
        metric["interval"] = "2s"
    spec.pop("notifications", None)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    state = tmp_path_factory.mktemp("state")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")},
        "OPSDAG_STATE_DIR": str(state),
        "OPSDAG_INCLUDE_DIR": str(include),
        "OPSDAG_SANDBOX_DIR": str(state / "no-sandbox"),
        "OPSDAG_REPORTS_DIR": str(state / "reports"),
        "AIRFLOW_CONN_KUBERNETES_DEFAULT": cluster.kube.connection_json(),
        "AIRFLOW_CONN_PROMETHEUS_DEFAULT": prometheus.connection_env(),
    }
    try:
        prometheus.wait_for_targets(1)
        subprocess.run(
            [ROOT / "scripts" / "airflow", "version"], env=env, check=True, capture_output=True, timeout=180
        )
        yield env
    finally:
        prometheus.stop()
        exporter.stop()


def selectors(kube: KubeReleaseCluster) -> Changes[tuple[str, str]]:
    """Every (active, preview) pair of colours the two Services selected while a release ran, in order."""

    def pair() -> tuple[str, str]:
        active, preview = (
            (kube.get("services", name) or {}).get("spec", {}).get("selector", {}).get("opsdag.io/colour")
            for name in (ACTIVE, PREVIEW)
        )
        return (active, preview)

    return Changes(pair)


def layout(kube: KubeReleaseCluster) -> dict[str, Any]:
    """Which colours run which image, and which colour each Service selects."""
    out: dict[str, Any] = {}
    for colour in ("blue", "green"):
        found = kube.get("deployments", f"checkout-{colour}")
        out[colour] = found and found["spec"]["template"]["spec"]["containers"][0]["image"]
    for name in (ACTIVE, PREVIEW):
        out[name] = kube.get("services", name)["spec"]["selector"]["opsdag.io/colour"]
    return out


def test_a_healthy_colour_is_switched_to_and_an_erroring_one_never_is(
    cluster: KubeReleaseCluster, airflow_env: dict[str, str]
) -> None:
    BlueGreenObjects(cluster).reset()
    assert layout(cluster) == {"blue": cluster.image("1.0.0"), "green": None, ACTIVE: "blue", PREVIEW: "blue"}

    started = time.monotonic()
    with selectors(cluster) as colours:
        run = release(airflow_env, {"image": cluster.image("1.1.0"), "strategy": "bluegreen"})
    code, output, report = run.returncode, run.output, run.report
    print(f"\nhealthy: exit {code} in {time.monotonic() - started:.0f} s; selectors {colours.seen}")
    assert report is not None, output[-4000:]
    print(f"healthy: {report['status']}: {report['summary']}")
    assert report["status"] == "promoted" and code == 0, output[-4000:]
    # preview on green, then every user switched at once, then blue goes
    assert colours.seen[:3] == [("blue", "blue"), ("blue", "green"), ("green", "green")], colours.seen
    assert layout(cluster) == {
        "blue": None,
        "green": cluster.image("1.1.0"),
        ACTIVE: "green",
        PREVIEW: "green",
    }

    started = time.monotonic()
    with selectors(cluster) as colours:
        run = release(airflow_env, {"image": cluster.image(ERRORS_TAG), "strategy": "bluegreen"})
    code, output, report = run.returncode, run.output, run.report
    print(f"errors: exit {code} in {time.monotonic() - started:.0f} s; selectors {colours.seen}")
    assert report is not None, output[-4000:]
    print(f"errors: {report['status']}: {report['summary']}")
    assert report["status"] == "rolled_back", output[-4000:]
    assert "error-rate" in report["summary"], report["summary"]
    assert all(active == "green" for active, _ in colours.seen), colours.seen  # users never left green
    assert ("green", "blue") in colours.seen  # the new colour (blue) was judged on the preview
    assert layout(cluster) == {
        "blue": None,
        "green": cluster.image("1.1.0"),
        ACTIVE: "green",
        PREVIEW: "green",
    }

"""Releases triggered through Airflow's REST API against a real ``airflow standalone``.

The client (``python -m opsdag release``) authenticates with a token from /auth/token,
triggers ``release__demo-api`` and follows it; bad conf sent by hand is refused by the
DAG's Params (HTTP 400) or by its first task, before anything changes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.standalone_run import standalone_airflow
from support.waiting import wait_for

from opsdag.airflow_api import AirflowApiError, AirflowClient, Credentials

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
DAG = "release__demo-api"


@pytest.fixture(scope="module")
def rest_env(e2e_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The e2e settings with a state directory of its own: a fresh Airflow database."""
    state = tmp_path_factory.mktemp("rest-state")
    return {**e2e_env, "OPSDAG_STATE_DIR": str(state), "OPSDAG_REPORTS_DIR": str(state / "reports")}


@pytest.fixture(scope="module")
def airflow(rest_env: dict[str, str], sandbox) -> Iterator[Credentials]:
    """``airflow standalone`` on free ports, with its own state directory and short-bake specs."""
    with standalone_airflow(rest_env) as credentials:
        with AirflowClient(credentials) as client:
            client.unpause(DAG)
        yield credentials


def client_release(env: dict[str, str], *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "opsdag", "release", "demo-api", *args],
        env={**env, "PYTHONPATH": str(ROOT / "plugins")},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_client_release_is_promoted_and_faulty_one_rolled_back(airflow, rest_env, sandbox) -> None:
    sandbox.reset()
    good = client_release(rest_env, "--image", sandbox.image("1.1.0"), "--reason", "REST e2e", "--wait")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "stage_25: passed" in good.stdout
    assert "release promoted" in good.stdout
    assert sandbox.status()["stable"]["version"] == "1.1.0"

    bad = client_release(rest_env, "--image", sandbox.image("1.2.0-errors"), "--wait")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "stage_25: FAILED: error-rate" in bad.stdout
    assert "release rolled_back" in bad.stdout
    status = sandbox.status()
    assert (status["stable"]["version"], status["canary"]) == ("1.1.0", None)
    sandbox.reset()


def test_two_releases_at_once_run_one_after_the_other(airflow, rest_env, sandbox) -> None:
    sandbox.reset()
    first = client_release(rest_env, "--image", sandbox.image("1.1.0"))
    second = client_release(rest_env, "--image", sandbox.image("1.3.0-slow"))
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "in flight" in second.stdout and "queued" in second.stdout

    run_ids = [re.search(r"run (\S+?): ", p.stdout).group(1) for p in (first, second)]
    with AirflowClient(airflow) as client:
        runs = wait_for(
            lambda: (
                (r := [client.dag_run(DAG, run_id) for run_id in run_ids])
                and all(x["state"] in ("success", "failed") for x in r)
                and r
            ),
            400,
            what="both releases ended",
        )
    one, two = runs
    assert one["state"] == "success"  # 1.1.0 promoted
    assert two["state"] == "failed"  # 1.3.0-slow rolled back on latency
    assert two["start_date"] >= one["end_date"]  # the second waited for the first
    status = sandbox.status()
    assert (status["stable"]["version"], status["canary"]) == ("1.1.0", None)
    sandbox.reset()


@pytest.mark.parametrize(
    ("conf", "problem"),
    [
        ({}, "image"),
        ({"image": "registry.opsdag.local/demo-api"}, "image"),
        ({"image": "registry.opsdag.local/other:1.0"}, "image"),
        ({"image": "registry.opsdag.local/demo-api:1.1.0", "strategy": "yolo"}, "strategy"),
        ({"image": "registry.opsdag.local/demo-api:1.1.0\n"}, "image"),  # a trailing newline is a typo
    ],
)
def test_bad_conf_is_refused_by_params(airflow, conf, problem) -> None:
    with AirflowClient(airflow) as client, pytest.raises(AirflowApiError) as refused:
        client.trigger(DAG, conf)
    assert "HTTP 400" in str(refused.value)
    assert problem in str(refused.value)


def test_extra_conf_keys_are_refused_before_anything_changes(airflow, sandbox) -> None:
    sandbox.reset()
    before = sandbox.status()
    with AirflowClient(airflow) as client:
        run = client.trigger(DAG, {"image": sandbox.image("1.1.0"), "force": True})
        ended = wait_for(
            lambda: (r := client.dag_run(DAG, run["dag_run_id"]))["state"] in ("success", "failed") and r,
            120,
            what="refused run ended",
        )
        states = {t["task_id"]: t["state"] for t in client.task_instances(DAG, run["dag_run_id"])}
    assert ended["state"] == "failed"
    assert states["validate_request"] == "failed"
    assert states["preflight"] in ("upstream_failed", "skipped")
    assert states["canary.deploy"] in ("upstream_failed", "skipped")
    after = sandbox.status()
    assert (after["stable"], after["canary"], after["canary_weight"]) == (
        before["stable"],
        before["canary"],
        before["canary_weight"],
    )

"""The shape of a generated release DAG and the checks of its run conf, without running it."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest

from opsdag.factory import build_dags
from opsdag.spec.request import RequestRefused, validate_request

ROOT = Path(__file__).resolve().parents[2]
INCLUDE = ROOT / "include"


@pytest.fixture(scope="module")
def dags() -> dict:
    return build_dags("services", INCLUDE)


def test_canary_stages_follow_the_spec_with_rollback_and_report(dags) -> None:
    dag = dags["release__demo-api"]
    ids = [t.task_id for t in dag.tasks]
    assert ids[:3] == ["validate_request", "preflight", "deploy_canary"]
    for weight in (10, 25, 50, 100):
        assert f"stage_{weight}.set_weight" in ids and f"stage_{weight}.gate" in ids
    assert dag.get_task("stage_25.set_weight").upstream_task_ids == {"stage_10.gate"}
    assert dag.get_task("promote").upstream_task_ids == {"stage_100.gate"}
    rollback = dag.get_task("rollback")
    assert rollback.trigger_rule == "one_failed"
    assert {"deploy_canary", "stage_10.gate", "stage_100.gate", "promote"} <= rollback.upstream_task_ids
    assert dag.get_task("report").trigger_rule == "all_done"
    assert dag.get_task("outcome").upstream_task_ids == {"report"}
    assert dag.max_active_runs == 1


def test_stage_after_a_failure_runs_its_skip_check_instead_of_failing(dags) -> None:
    dag = dags["release__demo-api"]
    assert dag.get_task("stage_25.set_weight").trigger_rule == "all_done"
    assert dag.get_task("promote").trigger_rule == "all_done"


def test_a_step_with_approval_asks_a_person_first(dags) -> None:
    dag = dags["release__checkout"]
    approval = dag.get_task("stage_25.approval")
    assert type(approval).__name__ == "StageApprovalOperator"
    assert approval.fail_on_reject is True  # a rejection rolls the canary back
    assert dag.get_task("stage_25.set_weight").upstream_task_ids == {"stage_25.approval"}
    assert "stage_5.approval" not in [t.task_id for t in dag.tasks]


@pytest.mark.parametrize(
    ("conf", "refused"),
    [
        ({}, True),
        ({"image": "registry.opsdag.local/demo-api"}, True),
        ({"image": "registry.opsdag.local/demo-api:1.1.0", "strategy": "yolo"}, True),
        ({"image": "registry.opsdag.local/demo-api:1.1.0", "reason": "x" * 501}, True),
        ({"image": "registry.opsdag.local/demo-api:1.1.0"}, False),
        ({"image": "registry.opsdag.local/demo-api@sha256:" + "a" * 64, "dry_run": True}, False),
    ],
)
def test_params_refuse_bad_conf_at_trigger_time(dags, conf, refused) -> None:

    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dags["release__demo-api"].params)
    if refused:
        with pytest.raises(ParamValidationError, match=r"Invalid input for param|No value passed"):
            params.update(conf)
            params.validate()
    else:
        params.update(conf)
        assert params.validate()["image"] == conf["image"]


def test_first_task_refuses_unknown_keys_and_other_repositories(dags) -> None:
    from opsdag.spec.loader import load_kind

    spec = load_kind(INCLUDE, "services").specs["demo-api"]
    with pytest.raises(RequestRefused, match="force: Extra inputs"):
        validate_request({"image": "registry.opsdag.local/demo-api:1.1.0", "force": True}, spec)
    with pytest.raises(RequestRefused, match="not an image of demo-api's repository"):
        validate_request({"image": "docker.io/library/nginx:1.27"}, spec)
    with pytest.raises(RequestRefused, match=r"build: demo-api declares no image\.build"):
        validate_request({"image": "registry.opsdag.local/demo-api:1.1.0", "build": True}, spec)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "--image", "x/y:1"], "no service 'nope'"),
        (["demo-api", "--image", "registry.opsdag.local/other:1.0"], "not an image of demo-api's repository"),
        (["demo-api", "--image", "registry.opsdag.local/demo-api"], "not a full image reference"),
    ],
)
def test_release_client_refuses_bad_input_locally(args, message) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "opsdag", "release", *args],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "plugins"), "OPSDAG_HOME": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert proc.returncode == 2
    assert message in proc.stderr

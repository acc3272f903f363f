"""The shape of a generated release DAG and the checks of its run conf, without running it."""

from __future__ import annotations

import copy
import itertools
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


def test_every_strategy_the_spec_describes_is_a_group_the_run_branches_into(dags) -> None:
    dag = dags["release__demo-api"]
    ids = [t.task_id for t in dag.tasks]
    assert ids[:4] == ["validate_request", "build", "preflight", "strategy"]
    # no build asked: the build task skips and the release goes on; a failed build stops it
    assert dag.get_task("preflight").trigger_rule == "none_failed"
    assert "build" not in dag.get_task("rollback").upstream_task_ids
    assert dag.get_task("strategy").downstream_task_ids == {
        "canary.deploy",
        "bluegreen.deploy",
        "rolling.deploy",
    }
    assert dag.get_task("promote").upstream_task_ids == {
        "canary.stage_100.gate",
        "bluegreen.scale_down_delay",
        "rolling.batch_2.gate",
    }
    rollback = dag.get_task("rollback")
    assert rollback.trigger_rule == "one_failed"
    assert {
        "canary.deploy",
        "canary.stage_10.gate",
        "bluegreen.active.switch",
        "rolling.batch_1.replace",
    } <= (rollback.upstream_task_ids)
    assert dag.get_task("report").trigger_rule == "all_done"
    assert dag.get_task("outcome").upstream_task_ids == {"report"}
    assert dag.max_active_runs == 1


def test_canary_stages_follow_the_spec(dags) -> None:
    dag = dags["release__demo-api"]
    ids = [t.task_id for t in dag.tasks]
    for weight in (10, 25, 50, 100):
        assert f"canary.stage_{weight}.set_weight" in ids and f"canary.stage_{weight}.gate" in ids
    assert dag.get_task("canary.deploy").downstream_task_ids == {"canary.smoke", "rollback"}
    assert dag.get_task("canary.stage_10.set_weight").upstream_task_ids == {"canary.smoke"}
    assert dag.get_task("canary.stage_25.set_weight").upstream_task_ids == {"canary.stage_10.gate"}
    assert dag.get_task("canary.stage_10.gate").abort_action == "weight_zero"
    # deferred tasks retry once (Airflow may fail a task as it resumes); a verdict never retries
    assert (dag.get_task("canary.stage_10.gate").retries, dag.get_task("canary.deploy").retries) == (1, 1)
    assert dag.get_task("canary.stage_10.set_weight").retries == 0


def test_bluegreen_judges_a_preview_then_switches_once_and_can_switch_back(dags) -> None:
    dag = dags["release__demo-api"]
    chain = [
        "bluegreen.preview.open",
        "bluegreen.preview.gate",
        "bluegreen.active.switch",
        "bluegreen.active.gate",
    ]
    for before, after in itertools.pairwise(chain):
        assert before in dag.get_task(after).upstream_task_ids
    assert dag.get_task("bluegreen.preview.open").share == 0.05
    assert dag.get_task("bluegreen.preview.gate").abort_action == "preview_off"
    assert dag.get_task("bluegreen.active.gate").abort_action == "switch_back"
    assert dag.get_task("bluegreen.scale_down_delay").upstream_task_ids == {"bluegreen.active.gate"}


def test_rolling_replaces_one_instance_per_batch_with_a_gate_after_each(dags) -> None:
    dag = dags["release__demo-api"]
    first, second = dag.get_task("rolling.batch_1.replace"), dag.get_task("rolling.batch_2.replace")
    assert (first.canary, first.stable, second.canary) == (1, 1, 2)
    assert dag.get_task("rolling.batch_2.replace").upstream_task_ids == {"rolling.batch_1.gate"}
    assert dag.get_task("rolling.deploy").instances == 1


def test_stage_after_a_failure_runs_its_skip_check_instead_of_failing(dags) -> None:
    dag = dags["release__demo-api"]
    assert dag.get_task("canary.stage_25.set_weight").trigger_rule == "all_done"
    assert dag.get_task("promote").trigger_rule == "all_done"


def test_a_step_with_approval_asks_a_person_first(dags) -> None:
    dag = dags["release__checkout"]
    approval = dag.get_task("canary.stage_25.approval")
    assert type(approval).__name__ == "StageApprovalOperator"
    assert approval.fail_on_reject is True  # a rejection rolls the canary back
    # the canary keeps taking 5 % while a person decides: it is judged meanwhile, and aborted on a fault
    assert (approval.current_weight, approval.abort_action) == (5, "weight_zero")
    assert dag.get_task("canary.stage_25.set_weight").upstream_task_ids == {"canary.stage_25.approval"}
    assert "canary.stage_5.approval" not in [t.task_id for t in dag.tasks]


def test_only_the_strategies_a_spec_describes_get_a_group(dags) -> None:
    ids = {t.task_id.split(".")[0] for t in dags["release__checkout"].tasks}
    assert "canary" in ids and not {"bluegreen", "rolling"} & ids


def test_a_spec_whose_default_strategy_has_no_section_is_refused_before_a_dag_exists(tmp_path) -> None:
    from opsdag.spec.loader import load_kind

    (tmp_path / "services").mkdir()
    text = (
        (INCLUDE / "services" / "demo-api.yaml").read_text().replace("strategy: canary", "strategy: rolling")
    )
    start, end = text.index("rolling:\n  max_surge"), text.index("# requests to every")
    (tmp_path / "services" / "demo-api.yaml").write_text(text[:start] + text[end:])
    loaded = load_kind(tmp_path, "services")
    assert [str(e) for e in loaded.errors] == [
        f"{tmp_path / 'services' / 'demo-api.yaml'}: rolling: the rolling strategy (the default) needs "
        "a rolling section (bake, max_surge, max_unavailable)"
    ]
    assert build_dags("services", tmp_path).keys() == {"opsdag__broken_services_specs"}


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
    with pytest.raises(RequestRefused, match=r"image: .* is a digest; a build pushes a tag"):
        validate_request({"image": f"registry.opsdag.local/demo-api@sha256:{'0' * 64}", "build": True}, spec)
    checkout = load_kind(INCLUDE, "services").specs["checkout"]
    assert validate_request(
        {"image": "registry.example.com/shop/checkout:2.0", "build": True}, checkout
    ).build


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


def test_a_bluegreen_switch_with_approval_keeps_judging_the_preview_while_a_person_decides() -> None:
    from opsdag.factory.release_dag import release_dag
    from opsdag.spec.loader import load_kind

    spec = load_kind(INCLUDE, "services").specs["demo-api"]
    data = spec.model_dump(mode="json")
    data["bluegreen"]["approval"] = True
    dag = release_dag(type(spec).model_validate(data))
    approval = dag.get_task("bluegreen.active.approval")
    assert (approval.current_weight, approval.abort_action) == (5, "preview_off")
    assert dag.get_task("bluegreen.active.switch").upstream_task_ids == {"bluegreen.active.approval"}

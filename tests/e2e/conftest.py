"""End-to-end fixtures: run release DAGs for real through ``scripts/airflow dags test``.

Each test runs the DAG the way a person would from the repository root, in a fresh
Airflow home (its own state directory), against the session's sandbox, with a copy of
include/ whose bake windows are short: tests shorten time through the spec only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.dags_test import DagsTestRun, dags_test

ROOT = Path(__file__).resolve().parents[2]

# 4 stages, short bakes; the first stage is large enough that 8 % errors are certain to show.
TEST_STEPS = [
    {"weight": 25, "bake": "8s"},
    {"weight": 50, "bake": "5s"},
    {"weight": 75, "bake": "5s"},
    {"weight": 100, "bake": "5s"},
]


@pytest.fixture(scope="session")
def e2e_include(tmp_path_factory: pytest.TempPathFactory) -> Path:
    include = tmp_path_factory.mktemp("include")
    shutil.copytree(ROOT / "include", include, dirs_exist_ok=True)
    spec_path = include / "services" / "demo-api.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["canary"]["steps"] = TEST_STEPS
    spec["bluegreen"].update(pre_promotion_bake="8s", post_promotion_bake="8s", scale_down_delay="3s")
    # a larger preview share than the demo's, so that 8 s of preview traffic are enough to judge
    spec["bluegreen"]["preview_share"] = 0.3
    spec["rolling"]["bake"] = "8s"
    for metric in spec["analysis"]["metrics"]:
        metric["interval"] = "2s"
    spec["notifications"]["slack"]["connection_id"] = "slack_e2e"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    # the same service described with the canary only: a release asking for another strategy is refused
    only_canary = {k: v for k, v in spec.items() if k not in ("bluegreen", "rolling")}
    only_canary["name"] = "demo-api-canary-only"
    (include / "services" / "demo-api-canary-only.yaml").write_text(
        yaml.safe_dump(only_canary, sort_keys=False)
    )
    return include


@pytest.fixture(scope="session")
def e2e_env(sandbox, e2e_include: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    state = tmp_path_factory.mktemp("state")
    env = {
        **os.environ,
        "OPSDAG_STATE_DIR": str(state),
        "OPSDAG_INCLUDE_DIR": str(e2e_include),
        "OPSDAG_SANDBOX_DIR": str(sandbox.root),
        "OPSDAG_REPORTS_DIR": str(state / "reports"),
    }
    # The Airflow metadata DB is created once for the session (scripts/airflow does it on first use).
    subprocess.run(
        [ROOT / "scripts" / "airflow", "version"], env=env, check=True, capture_output=True, timeout=180
    )
    return env


@pytest.fixture
def run_release(e2e_env: dict[str, str], sandbox) -> Iterator[Callable[..., DagsTestRun]]:
    """Run ``release__demo-api`` with a conf to its end and return its output and report."""

    def run(
        conf: dict[str, Any],
        *,
        extra_env: dict[str, str] | None = None,
        timeout: float = 300,
        dag_id: str = "release__demo-api",
    ) -> DagsTestRun:
        return dags_test({**e2e_env, **(extra_env or {})}, dag_id, conf, timeout)

    sandbox.reset()
    yield run
    sandbox.reset()

"""The dags/ folder as Airflow's DAG processor sees it: every DAG present, nothing broken, fast."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = {
    "release__demo-api",
    "release__checkout",
    "backup__demo-db",
    "drill__demo-db",
    "runbook__canary-errors",
}

# Runs in a fresh interpreter so each file's parse time excludes Airflow's own import.
PROBE = textwrap.dedent(
    """
    import json, sys, time
    from airflow.dag_processing.dagbag import DagBag
    out = {}
    for path in sys.argv[1:]:
        start = time.perf_counter()
        bag = DagBag(path)
        out[path] = {"seconds": time.perf_counter() - start, "dags": sorted(bag.dags),
                     "errors": {k: v for k, v in bag.import_errors.items()}}
    print(json.dumps(out))
    """
)


def parse(paths: list[Path], include: Path | None = None) -> dict:
    import json
    import os

    env = dict(os.environ, PYTHONPATH=str(ROOT / "plugins"), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    if include is not None:
        env["OPSDAG_INCLUDE_DIR"] = str(include)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, paths)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def shipped() -> dict:
    return parse(sorted((ROOT / "dags").glob("*.py")))


def test_every_expected_dag_is_present_without_import_errors(shipped: dict) -> None:
    found = {dag for result in shipped.values() for dag in result["dags"]}
    errors = {path: result["errors"] for path, result in shipped.items() if result["errors"]}
    assert errors == {}
    assert found >= EXPECTED


def test_each_dag_file_parses_well_under_a_second(shipped: dict) -> None:
    slow = {path: round(r["seconds"], 3) for path, r in shipped.items() if r["seconds"] >= 0.5}
    assert slow == {}


def test_release_dag_params_are_the_contract() -> None:
    from opsdag.factory import build_dags

    dag = build_dags("services", ROOT / "include")["release__demo-api"]
    params = dag.params
    assert set(params.keys()) == {"image", "strategy", "build", "dry_run", "reason"}
    assert params.get_param("strategy").value == "canary"
    assert (
        params.get_param("image")
        .schema["pattern"]
        .startswith("^(?![\\s\\S]*\\s)registry\\.opsdag\\.local/demo\\-api")
    )
    assert all(params.get_param(name).description for name in params)


def test_a_broken_spec_is_an_import_error_naming_file_and_field(tmp_path: Path) -> None:
    include = tmp_path / "include"
    shutil.copytree(ROOT / "include", include)
    broken = include / "services" / "demo-api.yaml"
    spec = yaml.safe_load(broken.read_text())
    spec["canary"]["steps"][1]["bake"] = "soon"
    broken.write_text(yaml.safe_dump(spec, sort_keys=False))

    result = parse([ROOT / "dags" / "releases.py"], include)[str(ROOT / "dags" / "releases.py")]

    assert result["dags"] == ["release__checkout"]  # the valid spec's DAG still loads
    [message] = result["errors"].values()
    assert f"{broken}: canary.steps[1].bake: 'soon' is not a duration" in message

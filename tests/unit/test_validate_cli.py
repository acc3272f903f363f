"""``python -m opsdag validate``, run as a user runs it: in a subprocess.

Exit codes (see opsdag.cli): 0 all specs valid, 1 some spec is invalid (one
``file: field: problem`` line each on stdout, a count on stderr), 2 the command cannot
run as asked (PATH does not exist, or the kind of a file cannot be told).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from opsdag import paths

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"

SERVICE = """\
name: demo-api
owners: [platform-team]
platform: {kind: sandbox}
image: {repository: registry.opsdag.local/demo-api}
canary:
  steps:
    - {weight: 10, bake: 30s}
    - {weight: 50, bake: 30s}
    - {weight: 100, bake: 30s}
analysis:
  metrics:
    - name: error-rate
      query: sum(rate(errors{$canary}[15s]))
      max: 0.02
"""

DATABASE = """\
name: demo-db
connection_id: postgres_demo
backup: {schedule: "0 2 * * *"}
objectives: {rto: 15m, rpo: 26h}
"""

RUNBOOK = """\
name: canary-errors
alerts: [HighCanaryErrorRate]
steps:
  - {action: check_metric, query: "sum(up)", above: 0}
  - {action: notify, message: canary errors}
"""


def opsdag(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OPSDAG_")}
    environ.update(PYTHONPATH=str(PLUGINS), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "opsdag", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small include/ tree with one valid spec of each kind, and the sandbox folder."""
    include = tmp_path / "include"
    for kind, name, text in (
        ("services", "demo-api", SERVICE),
        ("databases", "demo-db", DATABASE),
        ("runbooks", "canary-errors", RUNBOOK),
    ):
        (include / kind).mkdir(parents=True)
        (include / kind / f"{name}.yaml").write_text(text, encoding="utf-8")
    (include / "sandbox").mkdir()
    (include / "sandbox" / "versions.yaml").write_text("service: demo-api\nversions: {}\n", encoding="utf-8")
    return include


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def test_shipped_include_is_valid() -> None:
    include = paths.include_dir()
    counts = {
        kind: len(list((include / kind).glob("*.y*ml"))) for kind in ("services", "databases", "runbooks")
    }
    result = opsdag("validate", "include/", cwd=include.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    expected = ", ".join(_plural(n, kind.removesuffix("s")) for kind, n in counts.items())
    assert result.stdout == f"OK: {expected} in include/\n"
    assert result.stderr == ""


def test_default_path_is_the_include_dir(tree: Path) -> None:
    result = opsdag("validate", cwd=tree.parent, env={"OPSDAG_INCLUDE_DIR": str(tree)})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "OK: 1 service, 1 database, 1 runbook in include/\n"


def test_broken_spec(tree: Path) -> None:
    broken = tree / "services" / "demo-api.yaml"
    broken.write_text(SERVICE.replace("{weight: 50,", "{weight: 5,"), encoding="utf-8")
    result = opsdag("validate", "include", cwd=tree.parent)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "include/services/demo-api.yaml: canary.steps[1].weight: "
        "weights must strictly increase: 5 comes after 10"
    ]
    assert (
        result.stderr == "FAILED: 1 problem in 1 of 3 files (1 service, 1 database, 1 runbook) in include/\n"
    )


def test_every_problem_of_every_file_is_printed(tree: Path) -> None:
    (tree / "databases" / "demo-db.yaml").write_text(DATABASE.replace("0 2 * * *", "daily"), encoding="utf-8")
    (tree / "services" / "broken.yaml").write_text("name: broken\nplatform: {kind: ecs\n", encoding="utf-8")
    (tree / "runbooks" / "canary-errors.yaml").write_text(RUNBOOK.replace("notify", "page"), encoding="utf-8")
    result = opsdag("validate", cwd=tree.parent, env={"OPSDAG_INCLUDE_DIR": str(tree)})
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert [line.split(": ")[:2] for line in lines] == [
        ["include/services/broken.yaml", "line 3, column 1"],
        ["include/databases/demo-db.yaml", "backup.schedule"],
        ["include/runbooks/canary-errors.yaml", "steps[1].action"],
    ]
    assert "3 problems in 3 of 4 files" in result.stderr


def test_one_kind_directory(tree: Path) -> None:
    result = opsdag("validate", "include/services", cwd=tree.parent)
    assert (result.returncode, result.stdout) == (0, "OK: 1 service in include/services/\n")


def test_single_file(tree: Path) -> None:
    result = opsdag("validate", "include/databases/demo-db.yaml", cwd=tree.parent)
    assert (result.returncode, result.stdout) == (0, "OK: 1 database in include/databases/demo-db.yaml\n")


def test_single_broken_file(tree: Path) -> None:
    path = tree / "runbooks" / "canary-errors.yaml"
    path.write_text(RUNBOOK + "  - {action: scale, service: demo-api, replicas: -2}\n", encoding="utf-8")
    result = opsdag("validate", str(path), cwd=tree.parent)
    assert result.returncode == 1
    assert (
        result.stdout
        == "include/runbooks/canary-errors.yaml: steps[2].replicas: must be at least 1, not -2\n"
    )


def test_file_whose_kind_cannot_be_told(tree: Path) -> None:
    drafts = tree.parent / "drafts"
    drafts.mkdir()
    (drafts / "demo-api.yaml").write_text(SERVICE, encoding="utf-8")
    result = opsdag("validate", "drafts/demo-api.yaml", cwd=tree.parent)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "cannot tell the kind of drafts/demo-api.yaml" in result.stderr
    assert "--kind" in result.stderr
    result = opsdag("validate", "--kind", "services", "drafts/demo-api.yaml", cwd=tree.parent)
    assert (result.returncode, result.stdout) == (0, "OK: 1 service in drafts/demo-api.yaml\n")


def test_non_existent_path(tree: Path) -> None:
    result = opsdag("validate", "no/such/include", cwd=tree.parent)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == "python -m opsdag validate: error: no/such/include does not exist\n"


def test_directory_without_specs(tree: Path) -> None:
    result = opsdag("validate", "include/sandbox", cwd=tree.parent)
    assert result.returncode == 2
    assert "include/sandbox holds no specs" in result.stderr


def test_duplicate_names_across_files(tree: Path) -> None:
    (tree / "services" / "demo-api.yml").write_text(SERVICE, encoding="utf-8")
    result = opsdag("validate", "include", cwd=tree.parent)
    assert result.returncode == 1
    assert result.stdout == (
        "include/services/demo-api.yml: name: "
        "'demo-api' is already defined in include/services/demo-api.yaml\n"
    )


def test_every_action_of_the_catalogue_is_performed_so_a_scale_step_validates(tree: Path) -> None:
    path = tree / "runbooks" / "canary-errors.yaml"
    path.write_text(RUNBOOK + "  - {action: scale, service: demo-api, replicas: 4}\n", encoding="utf-8")
    result = opsdag("validate", "include/runbooks/canary-errors.yaml", cwd=tree.parent)
    assert (result.returncode, result.stdout) == (0, "OK: 1 runbook in include/runbooks/canary-errors.yaml\n")


def test_no_command_prints_help() -> None:
    result = opsdag(cwd=PLUGINS.parent)
    assert result.returncode == 2
    assert "validate" in result.stderr


def test_validate_does_not_import_airflow(tree: Path) -> None:
    """Airflow's import alone takes seconds: the validate command must not pay for it."""
    code = (
        "import sys\n"
        "from opsdag.cli import main\n"
        "rc = main(['validate', sys.argv[1]])\n"
        "loaded = sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.'))\n"
        "print('AIRFLOW:', loaded, 'RC:', rc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code, str(tree)],
        env={**os.environ, "PYTHONPATH": str(PLUGINS)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "AIRFLOW: [] RC: 0" in result.stdout, result.stdout + result.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line]
    assert "opsdag.spec.loader" in imported
    assert not [m for m in imported if m.split(".")[0] == "airflow"]


def test_kind_names_match_the_loader() -> None:
    from opsdag.cli.validate import KIND_NAMES
    from opsdag.spec.loader import KINDS

    assert tuple(KINDS) == KIND_NAMES

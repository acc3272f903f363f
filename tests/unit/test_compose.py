"""docker-compose.yaml, Dockerfile, requirements.txt and .env.example agree with each other and the repo.

The containers cannot be started here (no image registry is reachable), so this checks
what can be checked without them: the compose file parses (PyYAML, anchors and merge
keys resolved as Compose resolves them) and has the official Airflow 3 Celery layout;
everything it references exists; the image is the Airflow version and Python version
the project pins; the image installs requirements.txt, whose pins are those of
requirements.lock; and no secret is written in the compose file.

Not checked with the Compose CLI: neither this machine nor scripts/setup has it (the
Debian docker.io package ships no `docker compose` plugin, and Debian's docker-compose
1.29 predates the optional env_file syntax used here), so the YAML checks below are
the whole validation. The file was also validated once by hand against the Compose
Specification's JSON schema (compose-spec/compose-spec, schema/compose-spec.json).
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"

AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}
ALL_SERVICES = {*AIRFLOW_SERVICES, "airflow-init", "postgres", "redis"}
AIRFLOW_HOME = "/opt/airflow"

# An interpolation that must come from .env or the shell: ${NAME} or ${NAME:?message}.
REQUIRED_VAR = re.compile(r"^\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?\?[^}]*)?\}$")
# Every interpolation in the file; "$${" is Compose's escape for a literal "${".
INTERPOLATION = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|JWT|_KEY$|^AIRFLOW_CONN_", re.IGNORECASE)
URL_CREDENTIALS = re.compile(r"://[^/:@\s]*:(?P<password>[^@\s]+)@")


# -- helpers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def strings(node: Any, path: str = "") -> list[tuple[str, str]]:
    """Every string of the document with its path (keys included)."""
    if isinstance(node, dict):
        found = []
        for key, value in node.items():
            found.append((f"{path}/{key}", str(key)))
            found.extend(strings(value, f"{path}/{key}"))
        return found
    if isinstance(node, list):
        return [hit for i, item in enumerate(node) for hit in strings(item, f"{path}[{i}]")]
    return [(path, node)] if isinstance(node, str) else []


def mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(type, source, target)`` of each volume entry, short or long syntax."""
    found = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            found.append((entry["type"], str(entry.get("source", "")), entry["target"]))
            continue
        parts = entry.split(":")
        source, target = (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        found.append((kind, source, target))
    return found


def in_repo(relative: str) -> Path:
    path = (ROOT / relative).resolve()
    assert path.is_relative_to(ROOT), f"{relative} is outside the repository"
    return path


def pins(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of the ``name==version`` lines of a requirements file."""
    found = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;]+)", line)
        assert match, f"{path.name}: {raw!r} is not an exact pin"
        found[canonicalize_name(match.group(1))] = match.group(3)
    return found


def runtime_pins_of_requirements_in() -> dict[str, str]:
    """The part of requirements.in above its "# test and dev tools" line."""
    text = (ROOT / "requirements.in").read_text()
    marker = "# test and dev tools"
    assert marker in text, f"requirements.in lost its {marker!r} line: requirements.txt is made from above it"
    found = {}
    for raw in text.split(marker, 1)[0].splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==", 1)
            found[canonicalize_name(name)] = version.strip()
    return found


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of the Dockerfile, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    logical, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        logical.append(current)
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in logical]


def dockerignored(relative: str) -> bool:
    """Whether .dockerignore keeps ``relative`` out of the build context (last match wins)."""
    ignored = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        if fnmatch.fnmatch(relative, pattern.lstrip("!").strip("/")):
            ignored = not negate
    return ignored


# -- the layout -------------------------------------------------------------------------


def test_compose_has_the_airflow_3_celery_layout(services: dict[str, dict[str, Any]]) -> None:
    assert not ALL_SERVICES - set(services), f"missing services: {sorted(ALL_SERVICES - set(services))}"
    for name, command in AIRFLOW_SERVICES.items():
        assert services[name].get("command") == command, name
    assert "8080" in str(services["airflow-apiserver"]["ports"][0]).rsplit(":", 1)[-1]


def test_every_airflow_service_runs_the_same_celery_configuration(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in [*AIRFLOW_SERVICES, "airflow-init"]:
        service = services[name]
        env = environment(service)
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:"), name
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://"), name
        assert "@postgres:" in env["AIRFLOW__CELERY__RESULT_BACKEND"], name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql"), name
        assert "@postgres:" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false", name
        # One image for all: built from the Dockerfile, same tag.
        assert service["build"] == services["airflow-apiserver"]["build"], name
        assert service["image"] == services["airflow-apiserver"]["image"], name


def test_compose_and_scripts_cluster_run_the_same_topology_and_settings(
    services: dict[str, dict[str, Any]],
) -> None:
    """The container form and the process form (opsdag.dev.cluster) of one Celery cluster agree."""
    from opsdag.dev.cluster import topology

    assert topology.roles() == ALL_SERVICES - {"airflow-init"}
    for item in topology.COMPONENTS:
        assert " ".join(item.command).startswith(AIRFLOW_SERVICES[item.role]), item.name
    for name in AIRFLOW_SERVICES:
        env = environment(services[name])
        for setting, value in topology.SHARED_SETTINGS.items():
            assert env.get(setting, "").lower() == value.lower(), (name, setting)
        # secrets and addresses are set in both, from .env there and from 0600 files in the cluster
        assert set(topology.SECRET_SETTINGS) <= set(env), name
        # where the cluster differs on purpose (documented in topology), compose keeps Airflow's default
        differing = set(topology.CLUSTER_ONLY_SETTINGS) - {"AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"}
        assert not differing & set(env), name


def test_opsdag_finds_its_code_specs_and_state_in_the_containers(services: dict[str, dict[str, Any]]) -> None:
    for name in [*AIRFLOW_SERVICES, "airflow-init"]:
        service = services[name]
        env = environment(service)
        binds = {target: source for kind, source, target in mounts(service) if kind == "bind"}
        volumes = {target for kind, _, target in mounts(service) if kind == "volume"}
        assert binds.get(f"{AIRFLOW_HOME}/dags") == "./dags", name
        assert binds.get(f"{AIRFLOW_HOME}/plugins") == "./plugins", name
        # opsdag.paths reads the specs from $OPSDAG_HOME/include.
        assert binds.get(f"{env['OPSDAG_HOME']}/include") == "./include", name
        # Reports and backups live under $OPSDAG_STATE_DIR: a named volume, not the image.
        assert env["OPSDAG_STATE_DIR"] in volumes, name


def test_services_wait_for_what_they_need(services: dict[str, dict[str, Any]]) -> None:
    for name in AIRFLOW_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["airflow-init"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"
    for name, service in services.items():
        for needed, rule in (service.get("depends_on") or {}).items():
            assert needed in services, f"{name} depends on unknown service {needed}"
            if rule.get("condition") == "service_healthy":
                assert "healthcheck" in services[needed], (
                    f"{name} waits for {needed}, which has no healthcheck"
                )
        if name != "airflow-init":
            assert "healthcheck" in service, f"{name} has no healthcheck"


# -- references -------------------------------------------------------------------------


def test_every_bind_mount_build_and_required_env_file_exists(compose: dict[str, Any]) -> None:
    declared_volumes = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for kind, source, target in mounts(service):
            if kind == "bind":
                assert in_repo(source).exists(), f"{name}: bind mount {source} -> {target} does not exist"
            elif source:
                assert source in declared_volumes, f"{name}: volume {source} is not declared"
        build = service.get("build")
        if build is not None:
            context = in_repo(build if isinstance(build, str) else build.get("context", "."))
            assert context.is_dir(), f"{name}: build context {context} is missing"
            dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
            assert (context / dockerfile).is_file(), f"{name}: {dockerfile} is missing"
        env_files = service.get("env_file") or []
        for entry in [env_files] if isinstance(env_files, str | dict) else env_files:
            path, required = (
                (entry, True) if isinstance(entry, str) else (entry["path"], entry.get("required", True))
            )
            if required:
                assert in_repo(path).is_file(), f"{name}: env_file {path} is missing"
            else:
                # The optional one holds secrets: ignored by git, documented by its example.
                relative = path.removeprefix("./")
                ignored = (ROOT / ".gitignore").read_text().splitlines()
                assert relative in ignored or f"/{relative}" in ignored, f"{path} is not in .gitignore"
                assert in_repo(f"{path}.example").is_file(), f"{path}.example is missing"


def test_env_example_lists_every_required_setting_without_values() -> None:
    example = (ROOT / ".env.example").read_text()
    settings = dict(
        line.split("=", 1)
        for line in example.splitlines()
        if line and not line.startswith("#") and "=" in line
    )
    required = {
        match["name"]
        for _, text in strings(yaml.safe_load(COMPOSE.read_text()))
        for match in INTERPOLATION.finditer(text)
        if match["op"] in ("?", ":?")
    }
    assert required, "docker-compose.yaml requires no setting: the secrets lost their ${VAR:?...}"
    assert required <= set(settings), f"not in .env.example: {sorted(required - set(settings))}"
    for name, value in settings.items():
        if SECRET_NAME.search(name):
            assert value == "", f".env.example gives {name} a value: secrets are left empty there"


# -- secrets ----------------------------------------------------------------------------


def test_no_secret_is_written_in_the_compose_file(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key, value in environment(service).items():
            assert not key.startswith("AIRFLOW_CONN_"), f"{name}: connections come from .env, not {key}"
            if SECRET_NAME.search(key):
                assert REQUIRED_VAR.match(value), (
                    f"{name}: {key} must be ${{VAR:?...}} from .env, not {value!r}"
                )
    for path, text in strings(compose):
        for match in URL_CREDENTIALS.finditer(text):
            assert REQUIRED_VAR.match(match["password"]), f"{path}: a password is written in the URL {text!r}"
        for match in INTERPOLATION.finditer(text):
            if SECRET_NAME.search(match["name"]):
                assert match["op"] in (None, "?", ":?"), f"{path}: {match['name']} has a default value"
        assert not re.search(r"hooks\.slack\.com|xox[abpr]-|BEGIN [A-Z ]*PRIVATE KEY", text), path


# -- image and requirements ---------------------------------------------------------------


def test_the_image_is_the_pinned_airflow_on_the_supported_python() -> None:
    froms = [args for instruction, args in dockerfile_instructions() if instruction == "FROM"]
    assert len(froms) == 1, froms
    match = re.fullmatch(r"apache/airflow:(?P<airflow>[0-9][^-\s]*)-python(?P<python>3\.\d+)", froms[0])
    assert match, (
        f"the Dockerfile starts from {froms[0]!r}, not the official apache/airflow:<version>-python<x.y>"
    )
    airflow_pin = runtime_pins_of_requirements_in()["apache-airflow"]
    assert match["airflow"] == airflow_pin, (
        f"the image is Airflow {match['airflow']}, requirements.in pins {airflow_pin}"
    )
    requires_python = re.search(r'requires-python\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert requires_python and SpecifierSet(requires_python.group(1)).contains(match["python"] + ".0")


def test_the_image_installs_requirements_txt() -> None:
    instructions = dockerfile_instructions()
    copied = {}
    for instruction, args in instructions:
        if instruction in ("COPY", "ADD"):
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            for source in words[:-1]:
                copied[source] = words[-1]
                assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
                assert not dockerignored(source), f".dockerignore keeps {source} out of the build context"
    assert "requirements.txt" in copied, "the Dockerfile does not copy requirements.txt"
    installs = [
        shlex.split(args)
        for instruction, args in instructions
        if instruction == "RUN" and re.search(r"\b(pip|uv pip) install\b", args)
    ]
    assert any(
        words[i] in ("-r", "--requirement") and words[i + 1] == copied["requirements.txt"]
        for words in installs
        for i in range(len(words) - 1)
    ), f"no RUN pip install -r {copied['requirements.txt']}"


def test_requirements_txt_is_the_runtime_part_of_requirements_in_at_the_locked_versions() -> None:
    wanted = pins(ROOT / "requirements.txt")
    locked = pins(ROOT / "requirements.lock")
    assert wanted == runtime_pins_of_requirements_in(), "regenerate requirements.txt (command in its header)"
    for name, version in wanted.items():
        assert locked.get(name) == version, (
            f"requirements.txt pins {name}=={version}, the lock {locked.get(name)}"
        )
    for tool in ("pytest", "ruff", "kmock"):
        assert tool not in wanted, f"{tool} is a test tool: not in the image"

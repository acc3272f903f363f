"""``python -m opsdag kube-role``: the Role a cluster admin applies is the one the preflight checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from opsdag import paths
from opsdag.platforms.kubernetes import rbac

K8S = "1.33.0"


def kube_role(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opsdag", "kube-role", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_checkout_gets_the_release_role_and_the_build_role_valid_for_kubernetes() -> None:
    spec = paths.include_dir() / "services" / "checkout.yaml"
    result = kube_role(str(spec), "--service-account", "airflow-worker", "--account-namespace", "airflow")
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    for doc in docs:
        assert kubernetes_validate.validate(doc, K8S, strict=True)
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
    release = roles["opsdag-release"]
    assert release["metadata"]["namespace"] == "shop"
    assert release["rules"] == rbac.role_rules(rbac.rules_for("nginx"))
    resources = {r for rule in release["rules"] for r in rule["resources"]}
    assert "ingresses" in resources and "httproutes" not in resources  # only checkout's router
    assert roles["opsdag-image-build"]["rules"] == rbac.role_rules(rbac.BUILD_RULES)
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert {b["roleRef"]["name"] for b in bindings} == set(roles)
    assert all(
        b["subjects"] == [{"kind": "ServiceAccount", "name": "airflow-worker", "namespace": "airflow"}]
        for b in bindings
    )


def test_a_gateway_api_service_gets_httproutes_and_no_build_role(tmp_path: Path) -> None:
    text = (paths.include_dir() / "services" / "checkout.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    data["platform"]["router"] = {"kind": "gateway-api", "http_route": "checkout"}
    del data["image"]["build"]
    spec = tmp_path / "checkout.yaml"
    spec.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = kube_role(str(spec))
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in docs] == ["Role", "RoleBinding"]
    assert docs[0]["rules"] == rbac.role_rules(rbac.rules_for("gateway-api"))
    assert docs[1]["subjects"][0]["namespace"] == "shop"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("demo-api.yaml", 'platform.kind is "sandbox"'),
        ("missing.yaml", "no such file"),
    ],
)
def test_refused_specs_name_the_problem(spec: str, message: str) -> None:
    result = kube_role(str(paths.include_dir() / "services" / spec))
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_the_readme_lists_the_rules_of_every_kubernetes_router_as_the_code_has_them() -> None:
    kinds = ("gateway-api", "nginx", "replica-ratio", "service-selector")
    rows: dict[tuple[str, str], dict[tuple[str, ...], list[str]]] = {}
    for kind in kinds:
        for key, verbs in rbac.rules_for(kind).items():
            rows.setdefault(key, {}).setdefault(verbs, []).append(kind)
    lines = ["| Resource | API group | Verbs | Routers |", "|---|---|---|---|"]
    for (group, resource), by_verbs in rows.items():
        for verbs, who in by_verbs.items():
            routers = "all" if len(who) == len(kinds) else ", ".join(who)
            lines.append(f"| {resource} | {group or 'core'} | {', '.join(verbs)} | {routers} |")
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    table = "\n".join("   " + line for line in lines)
    assert table in readme, f"README's RBAC table differs from rbac.rules_for; expected:\n{table}"

"""``python -m opsdag kube-role SPEC [--service-account NAME]``: the RBAC a service's releases need.

SPEC is a service spec on ``platform.kind: kubernetes``. Printed on stdout, ready for
``kubectl apply -f -``: a Role in ``platform.namespace`` with exactly the rules the driver
and the service's router use (``opsdag.platforms.kubernetes.rbac``, the same table the
release's preflight checks with SelfSubjectAccessReviews), and a RoleBinding granting it
to the account of ``platform.connection_id``. A spec building its image in the cluster
(``image.build.builder: kaniko``) gets a second Role and RoleBinding in the build
namespace, for the build pod.

Printing, not applying: who may grant rights in a namespace is a cluster admin's call,
and the output is what they review. An invalid spec, or one on another platform, is a
usage error (exit 2) naming the field.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from opsdag.cli import EXIT_OK, UsageError

ROLE_NAME = "opsdag-release"
BUILD_ROLE_NAME = "opsdag-image-build"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "kube-role",
        help="print the Kubernetes Role and RoleBinding a service's releases need",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "spec", type=Path, metavar="SPEC", help="a service spec (include/services/<name>.yaml)"
    )
    parser.add_argument(
        "--service-account",
        default="airflow",
        metavar="NAME",
        help="the ServiceAccount the connection authenticates as (default: airflow)",
    )
    parser.add_argument(
        "--account-namespace",
        metavar="NS",
        help="the namespace of that ServiceAccount (default: platform.namespace)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    spec = _service(args.spec)
    print(render(spec, args.service_account, args.account_namespace), end="")
    return EXIT_OK


def manifests(spec: Any, service_account: str, account_namespace: str | None = None) -> list[dict[str, Any]]:
    """The Role(s) and RoleBinding(s) of a Kubernetes service spec, as objects."""
    from opsdag.platforms.kubernetes import rbac

    platform = spec.platform
    subject = {
        "kind": "ServiceAccount",
        "name": service_account,
        "namespace": account_namespace or platform.namespace,
    }
    docs = _grant(ROLE_NAME, platform.namespace, rbac.rules_for(platform.router.kind), subject, spec.name)
    build = getattr(spec.image, "build", None)
    if build is not None and build.builder == "kaniko" and build.kaniko is not None:
        docs += _grant(BUILD_ROLE_NAME, build.kaniko.namespace, rbac.BUILD_RULES, subject, spec.name)
    return docs


def render(spec: Any, service_account: str, account_namespace: str | None = None) -> str:
    """``manifests`` as a YAML stream with a comment saying what it is for."""
    import yaml

    head = (
        f"# RBAC for opsdag's releases of {spec.name} (platform.router.kind: "
        f"{spec.platform.router.kind}), from `python -m opsdag kube-role`\n"
    )
    body = "---\n".join(
        yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)
        for doc in manifests(spec, service_account, account_namespace)
    )
    return head + body


def _grant(
    name: str,
    namespace: str,
    rules: dict[tuple[str, str], tuple[str, ...]],
    subject: dict[str, str],
    service: str,
) -> list[dict[str, Any]]:
    from opsdag.platforms.kubernetes import rbac

    labels = {"app.kubernetes.io/managed-by": "opsdag", "opsdag.io/service": service}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "rules": rbac.role_rules(rules),
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [subject],
    }
    return [role, binding]


def _service(path: Path) -> Any:
    from opsdag.spec.loader import load_file
    from opsdag.spec.service import ServiceSpec

    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    spec, errors = load_file(path, ServiceSpec)
    if spec is None or errors:
        problems = "; ".join(f"{e.field}: {e.problem}" for e in errors)
        raise UsageError(f"{path} is not a valid service spec: {problems}")
    if spec.platform.kind != "kubernetes":
        raise UsageError(
            f"{path}: platform.kind is {json.dumps(spec.platform.kind)}; a Role is only for "
            "platform.kind: kubernetes"
        )
    return spec

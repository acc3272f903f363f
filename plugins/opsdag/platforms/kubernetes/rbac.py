"""The Kubernetes RBAC rules opsdag's Kubernetes driver and routers need in ``platform.namespace``.

Listed from the calls ``api.KubeApi`` makes for them (a test records every call of a
release through each router and checks it is covered). As a Role:

.. code-block:: yaml

    apiVersion: rbac.authorization.k8s.io/v1
    kind: Role
    metadata: {name: opsdag-release, namespace: <platform.namespace>}
    rules: <ROLE_RULES>

bound (RoleBinding) to the account of ``platform.connection_id``. ``httproutes`` only for
``router: gateway-api``, ``ingresses`` only for ``router: nginx``, ``patch`` on ``services``
only for ``router: service-selector`` (``ROUTER_VERBS``). The preflight asks the API
(SelfSubjectAccessReview, allowed to every account by Kubernetes' default ``system:basic-user``
ClusterRole) whether each of these is granted, so a missing one stops the release before any
change. Image builds (kaniko) need their own rules on pods in the build namespace.
"""

from __future__ import annotations

# (API group, resource) -> verbs
RULES: dict[tuple[str, str], tuple[str, ...]] = {
    ("apps", "deployments"): ("get", "create", "patch", "delete"),
    ("apps", "replicasets"): ("list",),  # rolling in place: which pods are new, which old
    ("", "pods"): ("list",),
    ("", "services"): ("get", "create", "patch", "delete"),
    ("", "resourcequotas"): ("list",),
    ("gateway.networking.k8s.io", "httproutes"): ("get", "patch"),
    ("networking.k8s.io", "ingresses"): ("get", "create", "patch", "delete"),
    ("authorization.k8s.io", "selfsubjectaccessreviews"): ("create",),  # every account may, by default
}


# What an in-cluster image build (``builder: kaniko``) does in ``image.build.kaniko.namespace``:
# create its build pod, read it (and adopt it on a retry), read its log, delete it.
BUILD_RULES: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "pods"): ("get", "create", "delete"),
    ("", "pods/log"): ("get",),
}


def role_rules(
    rules: dict[tuple[str, str], tuple[str, ...]] | None = None,
) -> list[dict[str, list[str]]]:
    """``rules`` (default ``RULES``) as a Role's ``rules``."""
    return [
        {"apiGroups": [group], "resources": [resource], "verbs": list(verbs)}
        for (group, resource), verbs in (RULES if rules is None else rules).items()
    ]


def covers(verb: str, resource: str) -> bool:
    """Whether ``RULES`` allow ``verb`` on ``resource`` (any group)."""
    return any(name == resource and verb in verbs for (_, name), verbs in RULES.items())


ROUTER_RESOURCES = {"gateway-api": "httproutes", "nginx": "ingresses"}


# Verbs on a resource every router uses that only some routers need: (group, resource, verb) -> them.
ROUTER_VERBS: dict[tuple[str, str, str], tuple[str, ...]] = {
    ("", "services", "patch"): ("service-selector",),  # the active and preview Services' selectors
}


def rules_for(router_kind: str | None) -> dict[tuple[str, str], tuple[str, ...]]:
    """``RULES`` without the resources (and ``ROUTER_VERBS``) of the routers a service does not use."""
    unused = {r for kind, r in ROUTER_RESOURCES.items() if kind != router_kind}
    return {
        key: tuple(v for v in verbs if router_kind in ROUTER_VERBS.get((*key, v), (router_kind,)))
        for key, verbs in RULES.items()
        if key[1] not in unused
    }

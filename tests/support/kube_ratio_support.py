"""What the replica-ratio router needs in ``KubeReleaseCluster``: one Service in front of both tracks.

checkout's own Service selects ``track: stable`` (the routers to Services need that); a
team using a replica ratio has one selecting ``app: checkout`` only, so the canary's pods
are behind it too. ``shared_service`` creates it once (``reset()`` leaves it alone) and
``ratio_router`` is the ``platform.router`` of such a spec.
"""

from __future__ import annotations

from typing import Any

SHARED_SERVICE = "checkout-shared"


def ratio_router(**fields: Any) -> dict[str, Any]:
    """``platform.router`` for a replica ratio through ``SHARED_SERVICE``."""
    return {"kind": "replica-ratio", "service": SHARED_SERVICE, **fields}


def shared_service(cluster: Any) -> dict[str, Any]:
    """``checkout-shared``, selecting checkout's pods of both tracks, created if missing."""
    found = cluster.get("services", SHARED_SERVICE)
    if found is not None:
        return found
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": SHARED_SERVICE, "namespace": cluster.NAMESPACE, "labels": {"app": "checkout"}},
        "spec": {
            "selector": {"app": "checkout"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return cluster.call("POST", "services", body=body)

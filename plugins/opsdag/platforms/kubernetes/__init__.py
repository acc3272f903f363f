"""Kubernetes as a platform (``platform.kind: kubernetes``): Deployments, Services and their routes.

- ``api``: the REST calls, through the cncf-kubernetes provider's ``KubernetesHook`` (retries,
  errors that name the verb, resource and namespace, merge patches, 409 re-read and retry);
- ``manifests``: pure functions that derive the canary Deployment and Service from the stable ones;
- ``readiness``: pure functions that read a Deployment's and its pods' status;
- ``driver``: ``KubernetesDriver``, the ``WorkloadDriver`` over the three.

The routers that split traffic between the stable and canary Deployments live in
``opsdag.platforms.routers`` (``gateway_api``).
"""

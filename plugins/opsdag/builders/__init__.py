"""Image builds: a service's build context -> an image pushed to its registry -> a digest.

- ``context``: the build context from the spec's ``image.build`` (paths checked against the
  repository, the content hash that names the cache tag); pure, no Airflow.
- ``registry``: the registry HTTP API v2 (digest of a tag, does a digest exist, an image's
  config and labels); httpx, no Airflow.
- ``docker_builder``: ``DockerEngineBuilder``, the Docker engine builder through the docker
  provider's ``DockerHook``; returns a ``BuiltImage`` (``repository@sha256:...``);
  ``engine_stream`` reads the engine's build and push streams (failures are lines there).
- ``kaniko_pod`` and ``kaniko_builder``: the in-cluster builder, a Kaniko-compatible build
  pod through the cncf-kubernetes provider's ``KubernetesHook``; returns a
  ``KanikoBuildResult``.

- ``release_build``: what the release's ``build`` task runs: the spec's builder, pushed
  where the platform pulls from, one result for both builders (``ReleaseBuild``).
"""

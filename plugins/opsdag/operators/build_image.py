"""The release's ``build`` task: build and push the image the run asked for, then deploy its digest.

Runs only for ``build: true`` (skipped otherwise, and in a dry run, saying what it would
build). The builder the spec names builds ``image.build``'s context as the requested
version and pushes it where the platform pulls from; the task returns the image the rest
of the release deploys, ``<repository>@sha256:<digest>``, once the platform says it can
pull it. A failed build fails here, with the engine's or the pod's own words, before
anything on the platform changes (the rollback only follows tasks that move traffic).
The Docker engine build runs in the worker (its log streams into the task log line by
line); the in-cluster build pod is waited for in the triggerer.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from opsdag.operators.service_base import ServiceOperator


class BuildImageOperator(ServiceOperator):
    """Build, push and resolve the release's image (see the module's docstring).

    :param service: the service's spec.
    """

    ui_color = "#fdf3e1"

    def run(self, context: Any) -> dict[str, Any]:
        from opsdag import paths
        from opsdag.builders.release_build import docker_build, kaniko_build, version_of

        request = self.request(context)
        build = self.service.image.build
        if not request.get("build"):
            raise AirflowSkipException(f"no build asked: the release deploys {request.get('image')}")
        if build is None:  # validate_request refuses this first
            raise AirflowFailException("build: the service declares no image.build")
        version = version_of(request["image"])
        where = f"{build.context} ({build.dockerfile}) with the {build.builder} builder"
        if request.get("dry_run"):
            raise AirflowSkipException(f"dry run: would build {where} as version {version}")
        repository = self.service.image.repository
        push_to = self.platform_call(lambda: self.driver.push_repository(repository))
        self.log.info("building %s as %s:%s, pushed to %s", where, repository, version, push_to)
        if build.builder == "docker":
            built = self.failing_with_reason(
                lambda: docker_build(
                    build,
                    repository=repository,
                    push_repository=push_to,
                    version=version,
                    root=paths.project_root(),
                    logger=self.log,
                )
            )
            return self.deployable(built.to_dict())
        builder, pod_build = self.failing_with_reason(
            lambda: kaniko_build(
                build,
                service=self.service.name,
                run_id=context["run_id"],
                push_repository=push_to,
                version=version,
                created=context["dag_run"].start_date,
                root=paths.project_root(),
            )
        )
        handle = self.failing_with_reason(lambda: builder.start(pod_build))
        how = "adopted" if handle.adopted else "created"
        self.log.info("build pod %s/%s %s", handle.namespace, handle.pod_name, how)
        self.defer(
            trigger=builder.trigger(handle),
            method_name="execute_complete",
            kwargs={"handle": asdict(handle), "version": version, "push_to": push_to},
        )
        raise AssertionError("defer() returns only by raising")  # pragma: no cover

    def execute_complete(
        self, context: Any, event: dict[str, Any], handle: dict[str, Any], version: str, push_to: str
    ) -> dict[str, Any]:
        from opsdag import paths
        from opsdag.builders.build_pod import BuildPod, PodOutcome
        from opsdag.builders.release_build import kaniko_build, kaniko_release_build

        build = self.service.image.build
        builder, pod_build = kaniko_build(
            build,
            service=self.service.name,
            run_id=context["run_id"],
            push_repository=push_to,
            version=version,
            created=context["dag_run"].start_date,
            root=paths.project_root(),
        )
        outcome = PodOutcome.from_event(event)
        result = self.failing_with_reason(lambda: builder.finish(BuildPod(**handle), outcome))
        repository = self.service.image.repository
        built = kaniko_release_build(result, pod_build, repository=repository, version=version)
        return self.deployable(built.to_dict())

    def deployable(self, built: dict[str, Any]) -> dict[str, Any]:
        """The built image, once the platform says it can pull it: every later task deploys this."""
        resolved = self.platform_call(lambda: self.driver.resolve_image(built["image"]))
        if not resolved.pullable:
            raise AirflowFailException(f"built and pushed {built['image']}, but {resolved.reason}")
        self.log.info(
            "built %s in %.1f s%s; the release deploys %s",
            built["version"],
            built["build_seconds"],
            " (not rebuilt: the same context was already pushed)" if built["cached"] else "",
            resolved.reference,
        )
        return {"image": resolved.reference, "digest": built["digest"], "build": built}

    def failing_with_reason(self, call):
        """Run a builder's ``call``; its error fails the task at once (no retry can fix a bad build)."""
        from opsdag.builders.build_pod import KanikoBuildError
        from opsdag.builders.context import BuildContextError
        from opsdag.builders.docker_builder import BuildFailed
        from opsdag.builders.kaniko_pod import BuildPodError

        try:
            return call()
        except (BuildFailed, BuildContextError, BuildPodError, KanikoBuildError) as exc:
            self.log.error("the build failed, nothing on the platform changed: %s", exc)
            raise AirflowFailException(str(exc)) from None

    def platform_call(self, call):
        from opsdag.platforms.base import PlatformError

        try:
            return call()
        except PlatformError as exc:
            raise AirflowFailException(f"build: {exc}") from None

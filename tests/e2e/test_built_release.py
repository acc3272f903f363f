"""Releases that build their image (``build: true``) on the sandbox, end to end.

The sandbox's Docker engine builds ``include/sandbox/build`` (the version label is the
requested version), pushes it to the sandbox's registry, and the release deploys
``registry.opsdag.local/demo-api@sha256:<digest>``: the sandbox reads the label back from
its registry to know which demo-app version to run. A build that fails stops the run at
the build task with the engine's words, tells people, and changes nothing on the platform.
"""

from __future__ import annotations

import re

import pytest
import yaml
from support.slack_server import SlackRecorder

pytestmark = pytest.mark.e2e
REPO = "registry.opsdag.local/demo-api"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def traffic(sandbox) -> dict:
    status = sandbox.status()
    return {
        "stable": status["stable"]["image"] if status.get("stable") else None,
        "canary": status["canary"]["image"] if status.get("canary") else None,
        "weight": status.get("canary_weight"),
    }


def test_a_built_release_deploys_the_digest_it_pushed(run_release, sandbox) -> None:
    """1.2.0-errors, built here: its canary runs the pushed digest, with that version's faults."""
    answered_before = sandbox.counts()["by_version"].get("1.2.0-errors", 0)
    with SlackRecorder() as slack:
        run = run_release(
            {"image": f"{REPO}:1.2.0-errors", "build": True, "reason": "e2e build"},
            extra_env={"AIRFLOW_CONN_SLACK_E2E": slack.connection_json()},
        )
        assert run.report is not None, run.output[-3000:]
        build = run.report["build"]
        assert DIGEST.match(build["digest"]), build
        assert run.report["image"] == build["image"] == f"{REPO}@{build['digest']}"
        assert build["labels"]["org.opencontainers.image.version"] == "1.2.0-errors"
        assert build["builder"] == "docker" and build["build_seconds"] > 0
        # the canary ran the digest (1.2.0-errors answered requests) and was judged and rolled back
        assert run.report["status"] == "rolled_back", run.output[-3000:]
        assert sandbox.counts()["by_version"].get("1.2.0-errors", 0) > answered_before
        assert traffic(sandbox)["canary"] is None
        assert f"the release deploys {REPO}@{build['digest']}" in run.output
        assert "## Image build" in run.markdown and build["digest"] in run.markdown
        texts = [m.get("text", "") for m in slack.wait_for(3, timeout=10)]
        assert any("building it first from include/sandbox/build" in t for t in texts), texts
        outcome = [str(m) for m in slack.messages if "rolled back" in m.get("text", "")]
        assert outcome and build["digest"] in outcome[-1], texts


def test_a_failing_build_fails_at_the_build_task_and_changes_nothing(
    run_release, sandbox, e2e_include
) -> None:
    spec = yaml.safe_load((e2e_include / "services" / "demo-api.yaml").read_text())
    path = e2e_include / "services" / "demo-api-broken-build.yaml"
    spec["name"] = "demo-api-broken-build"
    spec["image"]["build"] = {"context": "tests/build_contexts/broken"}
    (e2e_include / "services" / "demo-api-broken-build.yaml").write_text(
        yaml.safe_dump(spec, sort_keys=False)
    )
    before = traffic(sandbox)
    try:
        with SlackRecorder() as slack:
            run = run_release(
                {"image": f"{REPO}:1.1.0", "build": True},
                dag_id="release__demo-api-broken-build",
                extra_env={"AIRFLOW_CONN_SLACK_E2E": slack.connection_json()},
            )
            assert run.report is not None, run.output[-3000:]
            assert run.report["status"] == "failed"
            assert run.report["failure"]["task_id"] == "build"
            # the engine's own words, in the log, the report and the message
            engine_words = "not-in-the-context.txt"
            assert engine_words in run.report["failure"]["error"], run.report["failure"]
            assert engine_words in run.output
            assert "failed at the image build, before any change" in run.markdown
            assert run.report["incidents"] == []
            texts = [m.get("text", "") for m in slack.wait_for(2, timeout=10)]
            assert any("failed at the image build" in t and engine_words in t for t in texts), texts
        assert run.returncode != 0
        assert traffic(sandbox) == before  # nothing on the platform changed
    finally:
        path.unlink()

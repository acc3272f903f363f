"""Image build + push: opsdag's Docker engine builder vs ``docker build`` + ``docker push`` by hand.

Both sides use the same engine and registry, started here from Debian's packages with the
tests' support module (``tests/support/docker_engine.py``): dockerd with vfs storage on its
own socket, docker-registry on loopback asking for credentials (the ``docker_default``
connection for the builder, ``docker login`` once, untimed, for the CLI).

Every measured build is of new content: before each one, ``app/version.txt`` and a 1 MiB
``app/asset.bin`` get fresh bytes (same sizes), so the engine really builds and pushes a new
layer each time, while the unchanged busybox layer is in the engine's cache for both sides
alike. Per round:

- ``builder``: ``DockerEngineBuilder(...).build(...)`` in this process (a new builder each
  time, as in a task: ping, registry login, cache look-up, build, tag, push of the version
  tag and the ``ctx-`` cache tag, registry check of the digest);
- ``by hand``: ``docker build -t REPO:TAG --label ...`` (the same four OCI labels) then
  ``docker push REPO:TAG``, with the docker CLI (``DOCKER_BUILDKIT=0``: the same legacy
  builder the API uses);
- ``cached``: the builder again on the builder's content, unchanged: the registry look-up
  finds ``ctx-<hash>`` and nothing is built.

The order of ``builder`` and ``by hand`` alternates between rounds. Result: a table, and
bench/results/build.json (every round, the medians, the ratio builder / by hand against
the goal of 1.10, the machine with its load average).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT / "tests"))

from common import RESULTS, log, machine  # noqa: E402
from support.docker_engine import (  # noqa: E402
    REGISTRY_PASSWORD,
    REGISTRY_USER,
    connection_json,
    missing_binaries,
    running_dockerd,
    running_registry,
    scratch_context,
)

from opsdag.builders.context import resolve_context  # noqa: E402
from opsdag.builders.docker_builder import DockerEngineBuilder, oci_labels  # noqa: E402
from opsdag.spec.service import ImageBuild  # noqa: E402

GOAL = 1.10
DOCKER = "/usr/bin/docker"
REVISION = "0123456789abcdef0123456789abcdef01234567"
SOURCE = "https://git.example.com/bench/app"


def fresh_content(context: Path, label: str) -> None:
    (context / "app" / "version.txt").write_text(f"{label} {time.time_ns()}\n")
    (context / "app" / "asset.bin").write_bytes(os.urandom(1 << 20))


def by_hand(env: dict[str, str], url: str, context: Path, repository: str, tag: str) -> float:
    labels = oci_labels(version=tag, created=datetime.now(UTC), revision=REVISION, source=SOURCE)
    build = [DOCKER, "-H", url, "build", "-q", "-t", f"{repository}:{tag}", str(context)]
    for name, value in labels.items():
        build[5:5] = ["--label", f"{name}={value}"]
    started = time.monotonic()
    subprocess.run(build, env=env, check=True, capture_output=True)
    subprocess.run(
        [DOCKER, "-H", url, "push", f"{repository}:{tag}"], env=env, check=True, capture_output=True
    )
    return time.monotonic() - started


def with_builder(url: str, repo: Path, repository: str, tag: str) -> tuple[float, bool]:
    started = time.monotonic()
    result = DockerEngineBuilder(docker_url=url).build(
        resolve_context(ImageBuild(context="services/app"), repo),
        repository=repository,
        version=tag,
        revision=REVISION,
        source=SOURCE,
    )
    return time.monotonic() - started, result.cached


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if missing := missing_binaries():
        sys.exit(f"missing {', '.join(missing)}: install them with scripts/setup")

    import logging

    logging.getLogger("opsdag").setLevel(logging.WARNING)  # the table, not the build lines
    with tempfile.TemporaryDirectory(prefix="opsdag-bench-build-") as tmp, running_dockerd() as engine:
        work = Path(tmp)
        with running_registry(
            work / "registry", username=REGISTRY_USER, password=REGISTRY_PASSWORD
        ) as registry:
            os.environ["AIRFLOW_CONN_DOCKER_DEFAULT"] = connection_json(registry)
            env = {**os.environ, "DOCKER_CONFIG": str(work / "docker-config"), "DOCKER_BUILDKIT": "0"}
            subprocess.run(
                [DOCKER, "-H", engine.url, "login", "-u", REGISTRY_USER, "--password-stdin", registry.host],
                input=REGISTRY_PASSWORD.encode(), env=env, check=True, capture_output=True,
            )  # fmt: skip
            repos = {side: work / side for side in ("builder", "hand")}
            for repo in repos.values():
                scratch_context(repo / "services" / "app")
            repository = f"{registry.host}/bench/app"
            log("warm-up: one build of each (engine cache of the busybox layer, imports, login)")
            fresh_content(repos["builder"] / "services" / "app", "warm")
            with_builder(engine.url, repos["builder"], repository, "warm-builder")
            fresh_content(repos["hand"] / "services" / "app", "warm")
            by_hand(env, engine.url, repos["hand"] / "services" / "app", repository, "warm-hand")

            rounds = []
            for n in range(args.rounds):
                order = ["builder", "by hand"] if n % 2 == 0 else ["by hand", "builder"]
                seconds: dict[str, float] = {}
                for side in order:
                    if side == "builder":
                        fresh_content(repos["builder"] / "services" / "app", f"builder-{n}")
                        seconds["builder"], cached = with_builder(
                            engine.url, repos["builder"], repository, f"b{n}"
                        )
                        assert not cached, "a fresh context must be built"
                    else:
                        fresh_content(repos["hand"] / "services" / "app", f"hand-{n}")
                        seconds["by hand"] = by_hand(
                            env, engine.url, repos["hand"] / "services" / "app", repository, f"h{n}"
                        )
                seconds["cached"], cached = with_builder(engine.url, repos["builder"], repository, f"b{n}")
                assert cached, "the same context again must not be rebuilt"
                rounds.append({"order": order, "seconds": {k: round(v, 3) for k, v in seconds.items()}})
                log(f"round {n + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()))

    medians = {
        k: round(statistics.median(r["seconds"][k] for r in rounds), 3)
        for k in ("builder", "by hand", "cached")
    }
    per_round = [round(r["seconds"]["builder"] / r["seconds"]["by hand"], 3) for r in rounds]
    ratio = round(medians["builder"] / medians["by hand"], 3)
    print(f"\n{'round':>5}  {'builder s':>9}  {'by hand s':>9}  {'ratio':>6}  {'cached s':>8}")
    for n, (r, q) in enumerate(zip(rounds, per_round, strict=True), 1):
        s = r["seconds"]
        print(f"{n:>5}  {s['builder']:>9.2f}  {s['by hand']:>9.2f}  {q:>6.3f}  {s['cached']:>8.2f}")
    m = medians
    print(f"{'median':>5}  {m['builder']:>9.2f}  {m['by hand']:>9.2f}  {ratio:>6.3f}  {m['cached']:>8.2f}")
    print(f"goal: builder / by hand <= {GOAL}: {'met' if ratio <= GOAL else 'NOT met'}")

    result = {
        "benchmark": "build",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "engine": "dockerd 20.10 (Debian docker.io), --storage-driver=vfs, legacy builder; "
        "docker-registry 2.8 on loopback with htpasswd auth",
        "image": "FROM scratch: busybox-static (2 MB, cached layer) + app/ (1 MiB fresh each build), "
        "4 OCI labels",
        "command_by_hand": "DOCKER_BUILDKIT=0 docker build -t REPO:TAG --label (x4) CONTEXT && "
        "docker push REPO:TAG",
        "builder": "DockerEngineBuilder(docker_url=...).build(...) in-process: ping + login, cache look-up, "
        "build, tag, push of TAG and ctx-<hash>, registry HEAD check",
        "rounds": rounds,
        "median_seconds": medians,
        "ratio_per_round": per_round,
        "ratio": {"builder_over_by_hand": ratio, "goal": GOAL, "met": ratio <= GOAL},
        "cached_over_by_hand": round(medians["cached"] / medians["by hand"], 3),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "build.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    log(f"written to {path}")


if __name__ == "__main__":
    main()

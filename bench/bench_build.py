"""Image build + push: the release's ``build`` task and opsdag's builder vs docker build + push by hand.

Two sections of bench/results/build.json (``--mode``: ``real``, ``in-process`` or ``both``,
the default; a mode run alone keeps the other section of the file as it was):

**real** (the way users run opsdag): the sandbox (``running_sandbox``: its Docker engine,
its registry serving ``registry.opsdag.local``, ``docker_default`` in its connections.json)
and ``airflow standalone`` (opsdag.dev.standalone, its own home in a temporary state
directory), both started here and stopped by PID/process group at the end. The bench's copy
of include/ (``OPSDAG_INCLUDE_DIR``, seen by standalone) has demo-api only, with
``image.build.context`` pointing at ``.state/bench/build-context`` (inside the repository,
git-ignored: a context must be under the repository root) and a preflight check that cannot
pass (``haproxy-up`` min 1000000), so every run ends right after its build, nothing deployed:
the ``build`` task is the one a release runs. Per round, on fresh content (same shape as
below):

- ``task``: ``POST /api/v2/dags/release__demo-api/dagRuns`` with
  ``{"image": "registry.opsdag.local/demo-api:1.1.0", "build": true}``; the build task's
  duration is its task instance's start_date -> end_date (REST), and ``trigger -> end`` is
  the POST -> that end_date;
- ``by hand``: ``DOCKER_BUILDKIT=0 docker build`` (the same context, the same OCI labels as
  the task: version 1.1.0, created, the repository's HEAD as revision; demo-api sets no source) +
  ``docker push`` of ``127.0.0.1:<port>/demo-api:hand-<n>``, the docker CLI on the sandbox
  engine's socket (``docker login`` once, untimed, with docker_default's password);
- ``cached``: the same trigger again right after ``task``, on the same content: the registry
  has ``ctx-<hash>``, the log says "not rebuilt".

``task`` and ``by hand`` alternate in order between rounds. The build task's log (JSON
lines in standalone's home) splits its time: start -> first opsdag line (task process,
DAG parse, request), -> "building ... from" (git revision, connection look-ups, registry
cache look-up, engine ping + registry login), -> "pushed" (build, tag, push of the version
tag and of ``ctx-<hash>``, registry HEAD check), -> "built ... in" (resolve_image), -> the
task instance's end_date (XCom push, task exit).

**in-process** (as before): opsdag's Docker engine builder measured in this process.

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

The order of ``builder`` and ``by hand`` alternates between rounds.

Result: a table per section, and bench/results/build.json (every round, the medians, the
ratio task (builder) / by hand of the medians and per round against the goal of 1.10, the
machine with its load average: the machine is shared, other work may run at the same time).

    PYTHONPATH=plugins .venv/bin/python bench/bench_build.py --rounds 5
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


def by_hand(
    env: dict[str, str],
    url: str,
    context: Path,
    repository: str,
    tag: str,
    *,
    version: str | None = None,
    revision: str | None = REVISION,
    source: str | None = SOURCE,
) -> float:
    """``docker build`` (the builder's labels: ``version`` defaults to ``tag``) + ``docker push``."""
    labels = oci_labels(version=version or tag, created=datetime.now(UTC), revision=revision, source=source)
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


# -- in-process: the builder library in this process, on its own engine and registry ---------


def in_process(rounds_wanted: int) -> dict:
    """The builder library vs the CLI by hand, on an engine and a registry started here."""
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
            log("in-process warm-up: one build of each (engine cache of the busybox layer, imports, login)")
            fresh_content(repos["builder"] / "services" / "app", "warm")
            with_builder(engine.url, repos["builder"], repository, "warm-builder")
            fresh_content(repos["hand"] / "services" / "app", "warm")
            by_hand(env, engine.url, repos["hand"] / "services" / "app", repository, "warm-hand")

            rounds = []
            for n in range(rounds_wanted):
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
                log(f"in-process round {n + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()))
    os.environ.pop("AIRFLOW_CONN_DOCKER_DEFAULT", None)

    medians = {
        k: round(statistics.median(r["seconds"][k] for r in rounds), 3)
        for k in ("builder", "by hand", "cached")
    }
    per_round = [round(r["seconds"]["builder"] / r["seconds"]["by hand"], 3) for r in rounds]
    ratio = round(medians["builder"] / medians["by hand"], 3)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "engine": "dockerd 20.10 (Debian docker.io), --storage-driver=vfs, legacy builder; "
        "docker-registry 2.8 on loopback with htpasswd auth (started by the bench, not the sandbox)",
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


def print_in_process(section: dict) -> None:
    rounds, per_round, m = section["rounds"], section["ratio_per_round"], section["median_seconds"]
    ratio = section["ratio"]["builder_over_by_hand"]
    print(f"\nin-process (builder library, {section['date']})")
    print(f"{'round':>6}  {'builder s':>9}  {'by hand s':>9}  {'ratio':>6}  {'cached s':>8}")
    for n, (r, q) in enumerate(zip(rounds, per_round, strict=True), 1):
        s = r["seconds"]
        print(f"{n:>6}  {s['builder']:>9.2f}  {s['by hand']:>9.2f}  {q:>6.3f}  {s['cached']:>8.2f}")
    print(f"{'median':>6}  {m['builder']:>9.2f}  {m['by hand']:>9.2f}  {ratio:>6.3f}  {m['cached']:>8.2f}")
    print(f"goal: builder / by hand <= {GOAL}: {'met' if ratio <= GOAL else 'NOT met'}")


# -- real path: the release's build task, REST-triggered on airflow standalone ----------------

DAG = "release__demo-api"
VERSION = "1.1.0"  # declared in include/sandbox/versions.yaml
CONTEXT = Path(".state") / "bench" / "build-context"  # relative to the repository root (git-ignored)
RUN_TIMEOUT = 300.0
# The build task's log lines that split its time, in order: (name, start of the message, what
# happened between the previous mark and this one). A cached build has no engine lines.
MARKS = (
    ("first_opsdag_line", "building ",
     "task start -> first opsdag line (task process, DAG parse, request, push_repository)"),
    ("cache_hit", "not rebuilt",
     "-> 'not rebuilt' (git revision, docker_default look-ups, registry HEAD of ctx-<hash>)"),
    ("engine_build_start", "building 127.0.0.1",
     "-> engine build starts (git revision, docker_default look-ups, registry HEAD of ctx-<hash>, "
     "engine ping + registry login)"),
    ("engine_built", "Successfully tagged", "-> engine build done (the context's layers, the labels)"),
    ("version_pushed", f"{VERSION}: digest", "-> version tag pushed (tag, push of the new layer)"),
    ("pushed", "pushed 127.0.0.1", "-> 'pushed' (push of ctx-<hash>, layers already there; registry HEAD)"),
    ("resolved", "built ", "-> 'built ... in' (cached: tag check + labels; then resolve_image)"),
)  # fmt: skip
TASK_END = "-> task end_date (XCom push, task exit)"


def bench_include(directory: Path) -> tuple[Path, str | None]:
    """include/ with demo-api only: its build context the bench's, a preflight that fails."""
    import shutil

    import yaml

    include = directory / "include"
    shutil.copytree(ROOT / "include" / "sandbox", include / "sandbox")
    for kind in ("services", "databases", "runbooks"):
        (include / kind).mkdir(parents=True, exist_ok=True)
    spec = yaml.safe_load((ROOT / "include" / "services" / "demo-api.yaml").read_text())
    spec["image"]["build"]["context"] = str(CONTEXT)
    for dependency in spec["preflight"]["dependencies"]:
        dependency["min"] = 1_000_000  # cannot pass: the run ends after its build, nothing deployed
    spec.pop("notifications", None)
    (include / "services" / "demo-api.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return include, spec["image"]["build"].get("source")


def epoch(stamp: str | None) -> float | None:
    return datetime.fromisoformat(stamp).timestamp() if stamp else None


def task_log_marks(state_dir: Path, run_id: str, start: float) -> dict:
    """Seconds from the task's start to each of MARKS found (in order) in the build task's JSON
    log in standalone's home, and the log's lines, each stamped with its offset."""
    logs = state_dir / "airflow" / "logs" / f"dag_id={DAG}" / f"run_id={run_id}" / "task_id=build"
    candidates = sorted(logs.glob("attempt=*.log"))
    if not candidates:
        return {"error": f"no build task log in {logs}"}
    lines = []
    for raw in candidates[-1].read_text().splitlines():
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        if stamp := event.get("timestamp"):
            lines.append((epoch(stamp.replace("Z", "+00:00")) - start, str(event.get("event", ""))))
    marks: dict[str, float] = {}
    i = 0
    for name, prefix, _what in MARKS:
        for j in range(i, len(lines)):
            if lines[j][1].startswith(prefix):
                marks[name], i = round(lines[j][0], 3), j + 1
                break
    if lines:
        marks["first_log_line"] = round(lines[0][0], 3)
    return {"marks": marks, "lines": [(round(t, 3), m[:160]) for t, m in lines]}


def pieces(marks: dict, task_seconds: float, build_seconds: float | None) -> dict:
    """The build task's time split at the log marks it has: each piece ends at its mark."""
    found = marks.get("marks", {})
    out: dict[str, float | None] = {}
    previous = 0.0
    for name, _prefix, what in MARKS:
        if name in found:
            out[what] = round(found[name] - previous, 3)
            previous = found[name]
    out[TASK_END] = round(task_seconds - previous, 3)
    out["builder's own build_seconds (XCom)"] = build_seconds
    return out


def trigger_build(client, state_dir: Path) -> dict:
    """One REST-triggered release with ``build: true``; the build task's figures once the run ends."""
    from urllib.parse import quote

    conf = {"image": f"registry.opsdag.local/demo-api:{VERSION}", "build": True, "reason": "bench_build"}
    posted = time.time()
    run_id = client.trigger(DAG, conf)["dag_run_id"]
    path = f"/dags/{DAG}/dagRuns/{quote(run_id, safe='')}"
    deadline = time.monotonic() + RUN_TIMEOUT
    while client.dag_run(DAG, run_id)["state"] not in ("success", "failed"):
        if time.monotonic() > deadline:
            client.request("PATCH", path, json={"state": "failed"})  # not to queue the next run behind it
            raise TimeoutError(f"run {run_id} did not end within {RUN_TIMEOUT:.0f} s")
        time.sleep(0.5)
    ti = client.request("GET", f"{path}/taskInstances/build")
    if ti["state"] != "success":
        raise RuntimeError(f"run {run_id}: the build task ended {ti['state']} (see its log)")
    start, end = epoch(ti["start_date"]), epoch(ti["end_date"])
    built = (client.xcom(DAG, run_id, "build") or {}).get("build", {})
    task_seconds = round(end - start, 3)
    queued = epoch(ti.get("queued_when"))
    marks = task_log_marks(state_dir, run_id, start)
    return {
        "run_id": run_id,
        "task_seconds": task_seconds,
        "trigger_to_task_end_seconds": round(end - posted, 3),
        "trigger_to_task_start_seconds": round(start - posted, 3),
        "queued_to_start_seconds": round(start - queued, 3) if queued else None,
        "cached": built.get("cached"),
        "digest": built.get("digest"),
        "pieces": pieces(marks, task_seconds, built.get("build_seconds")),
        "log": marks,
        "load_1m": round(os.getloadavg()[0], 2),
    }


def real_path(rounds_wanted: int) -> dict:
    """The release's build task on standalone vs the CLI by hand, on the sandbox's engine and registry."""
    from support.sandbox import running_sandbox

    from opsdag.airflow_api import AirflowClient
    from opsdag.builders.release_build import source_revision
    from opsdag.dev import standalone
    from opsdag.platforms.sandbox import SandboxDriver

    load_start = [round(x, 2) for x in os.getloadavg()]
    context = ROOT / CONTEXT
    scratch_context(context)
    with tempfile.TemporaryDirectory(prefix="opsdag-bench-build-real-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o711)  # the sandbox's PostgreSQL runs as the postgres user
        include, source = bench_include(work)
        state_dir = work / "state"
        os.environ.update(
            {
                "OPSDAG_STATE_DIR": str(state_dir),
                "OPSDAG_INCLUDE_DIR": str(include),
                "OPSDAG_REPORTS_DIR": str(state_dir / "reports"),
            }
        )
        revision = source_revision(ROOT)
        log("starting the sandbox (its Docker engine and registry; before Airflow: it reads its connections)")
        with running_sandbox(work / "sandbox") as sandbox:
            conn = json.loads(sandbox.layout.connections_file.read_text())["docker_default"]
            engine_url = conn["extra"]["docker_url"]
            driver = SandboxDriver(sandbox_dir=sandbox.root)
            push_to = driver.push_repository("registry.opsdag.local/demo-api")
            env = {**os.environ, "DOCKER_CONFIG": str(work / "docker-config"), "DOCKER_BUILDKIT": "0"}
            subprocess.run(
                [DOCKER, "-H", engine_url, "login", "-u", conn["login"], "--password-stdin", conn["host"]],
                input=conn["password"].encode(), env=env, check=True, capture_output=True,
            )  # fmt: skip
            log("starting airflow standalone (its own home, a fresh metadata database)")
            started = time.monotonic()
            try:
                credentials = standalone.start(progress=lambda m: log(f"  {m}"))
                log(f"airflow standalone ready in {time.monotonic() - started:.0f} s")
                with AirflowClient(credentials, timeout=60) as client:
                    client.unpause(DAG)
                    log("warm-up: one release build and one build by hand (engine cache, DAG parsed)")
                    fresh_content(context, "warm-task")
                    warm = trigger_build(client, state_dir)
                    log(f"  warm-up task {warm['task_seconds']:.2f} s (cached: {warm['cached']})")
                    fresh_content(context, "warm-hand")
                    by_hand(env, engine_url, context, push_to, "hand-warm", version=VERSION,
                            revision=revision, source=source)  # fmt: skip
                    rounds = []
                    for n in range(rounds_wanted):
                        order = ["task", "by hand"] if n % 2 == 0 else ["by hand", "task"]
                        row: dict = {"order": order}
                        for side in order:
                            if side == "task":
                                fresh_content(context, f"task-{n}")
                                task = trigger_build(client, state_dir)
                                assert task["cached"] is False, f"a fresh context must be built: {task}"
                                cached = trigger_build(client, state_dir)  # same content, at once
                                assert cached["cached"] is True, f"the same context was rebuilt: {cached}"
                                row["task"], row["cached"] = task, cached
                            else:
                                fresh_content(context, f"hand-{n}")
                                seconds = by_hand(
                                    env, engine_url, context, push_to, f"hand-{n}",
                                    version=VERSION, revision=revision, source=source,
                                )  # fmt: skip
                                row["by hand"] = {
                                    "seconds": round(seconds, 3),
                                    "load_1m": round(os.getloadavg()[0], 2),
                                }
                        row["ratio"] = round(row["task"]["task_seconds"] / row["by hand"]["seconds"], 3)
                        rounds.append(row)
                        log(
                            f"real round {n + 1}: task {row['task']['task_seconds']:.2f} s "
                            f"(trigger -> end {row['task']['trigger_to_task_end_seconds']:.2f} s), "
                            f"by hand {row['by hand']['seconds']:.2f} s, ratio {row['ratio']:.3f}, "
                            f"cached {row['cached']['task_seconds']:.2f} s"
                        )
            finally:
                standalone.stop(progress=lambda m: log(f"  {m}"))
    for name in ("OPSDAG_STATE_DIR", "OPSDAG_INCLUDE_DIR", "OPSDAG_REPORTS_DIR"):
        os.environ.pop(name, None)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "build.real.tmp").write_text(json.dumps(rounds, indent=1))  # git-ignored (*.tmp)
    return summarize_real(rounds, load_start)


def summarize_real(rounds: list[dict], load_start: list[float]) -> dict:
    """The real path's section of build.json from its rounds."""

    def med(values) -> float | None:
        values = list(values)
        return round(statistics.median(values), 3) if values else None

    medians = {
        "task": med(r["task"]["task_seconds"] for r in rounds),
        "trigger_to_task_end": med(r["task"]["trigger_to_task_end_seconds"] for r in rounds),
        "by hand": med(r["by hand"]["seconds"] for r in rounds),
        "cached_task": med(r["cached"]["task_seconds"] for r in rounds),
        "cached_trigger_to_task_end": med(r["cached"]["trigger_to_task_end_seconds"] for r in rounds),
    }

    def median_pieces(kind: str) -> dict:
        names = dict.fromkeys(name for r in rounds for name in r[kind]["pieces"])
        return {
            name: med(v for r in rounds if (v := r[kind]["pieces"].get(name)) is not None) for name in names
        }

    ratio = round(medians["task"] / medians["by hand"], 3)
    e2e_ratio = round(medians["trigger_to_task_end"] / medians["by hand"], 3)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**machine(), "load_average_1_5_15_at_start": load_start},
        "airflow": "airflow standalone (opsdag.dev.standalone: LocalExecutor, SQLite), REST-triggered runs "
        f"of {DAG} (POST /api/v2/dags/{DAG}/dagRuns)",
        "engine": "the sandbox's: dockerd (vfs) on its own socket and its registry serving "
        "registry.opsdag.local on 127.0.0.1 (htpasswd); docker_default from its connections.json",
        "conf": {"image": f"registry.opsdag.local/demo-api:{VERSION}", "build": True},
        "context": f"{CONTEXT} (repository-relative, git-ignored): FROM scratch, busybox-static + app/ "
        "(1 MiB asset.bin + version.txt fresh each build)",
        "run_shape": "validate_request >> build >> preflight (made to fail: haproxy-up min 1000000, so each "
        "run ends after its build, nothing deployed) ...; the next run is triggered once the last ended",
        "command_by_hand": "DOCKER_BUILDKIT=0 docker -H <sandbox engine> build -q -t "
        "127.0.0.1:<port>/demo-api:hand-<n> --label (version 1.1.0, created, revision HEAD, source when set) "
        "CONTEXT && docker push",
        "task_seconds": "build task instance start_date -> end_date (GET .../taskInstances/build)",
        "rounds": rounds,
        "median_seconds": medians,
        "ratio_per_round": [r["ratio"] for r in rounds],
        "ratio": {
            "task_over_by_hand": ratio,
            "goal": GOAL,
            "met": ratio <= GOAL,
            "over_goal_by": round(ratio - GOAL, 3) if ratio > GOAL else 0.0,
            "trigger_to_task_end_over_by_hand": e2e_ratio,
        },
        "median_pieces_seconds": median_pieces("task"),
        "cached_median_pieces_seconds": median_pieces("cached"),
    }


def print_real(section: dict) -> None:
    m = section["median_seconds"]
    print(f"\nreal path (build task on airflow standalone, REST-triggered, {section['date']})")
    print(f"{'round':>6}  {'task s':>7}  {'POST->end s':>11}  {'by hand s':>9}  {'ratio':>6}  "
          f"{'cached task s':>13}  {'load 1m':>7}")  # fmt: skip
    for n, r in enumerate(section["rounds"], 1):
        t, c = r["task"], r["cached"]
        print(f"{n:>6}  {t['task_seconds']:>7.2f}  {t['trigger_to_task_end_seconds']:>11.2f}  "
              f"{r['by hand']['seconds']:>9.2f}  {r['ratio']:>6.3f}  {c['task_seconds']:>13.2f}  "
              f"{t['load_1m']:>7.2f}")  # fmt: skip
    ratio = section["ratio"]
    print(f"{'median':>6}  {m['task']:>7.2f}  {m['trigger_to_task_end']:>11.2f}  {m['by hand']:>9.2f}  "
          f"{ratio['task_over_by_hand']:>6.3f}  {m['cached_task']:>13.2f}")  # fmt: skip
    verdict = "met" if ratio["met"] else f"NOT met (by {ratio['over_goal_by']:.3f})"
    print(f"goal: task / by hand <= {GOAL}: {verdict}; POST -> task end / by hand: "
          f"{ratio['trigger_to_task_end_over_by_hand']:.3f}")  # fmt: skip
    for kind, key in (("fresh build", "median_pieces_seconds"), ("cached", "cached_median_pieces_seconds")):
        print(f"build task's time, {kind}: median per piece (s)")
        for name, seconds in section[key].items():
            print(f"  {seconds if seconds is not None else float('nan'):>7.3f}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mode", choices=["both", "real", "in-process"], default="both")
    args = parser.parse_args()
    path = RESULTS / "build.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    result = {
        "benchmark": "build",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "PYTHONPATH=plugins .venv/bin/python bench/bench_build.py " + " ".join(sys.argv[1:]),
        "goal": f"build task (and builder) / docker build + docker push by hand <= {GOAL}",
        "real_path": previous.get("real_path"),
        "in_process": previous.get("in_process"),
    }
    if args.mode in ("both", "real"):
        result["real_path"] = real_path(args.rounds)
        # earlier real-path runs stay listed (their medians), so that a new run never hides an old one
        earlier = previous.get("real_path_earlier_runs", [])
        if old := previous.get("real_path"):
            earlier.append(
                {
                    "date": old["date"],
                    "median_seconds": old["median_seconds"],
                    "ratio_per_round": old["ratio_per_round"],
                    "ratio": old["ratio"],
                    "load_average_1_5_15_at_end": old["machine"]["load_average_1_5_15_at_end"],
                }
            )
        result["real_path_earlier_runs"] = earlier
    if args.mode in ("both", "in-process"):
        result["in_process"] = in_process(args.rounds)
    result["machine"] = machine()
    if result["real_path"]:
        print_real(result["real_path"])
    if result["in_process"]:
        print_in_process(result["in_process"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    log(f"written to {path}")


if __name__ == "__main__":
    main()

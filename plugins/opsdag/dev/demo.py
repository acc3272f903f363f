"""``make demo``: the sandbox, Airflow standalone, and two releases of demo-api through the REST API.

``python -m opsdag.dev.demo up`` starts what is not running yet (sandbox, ``airflow
standalone``), releases a healthy version and then a faulty one exactly as a CI system
would (``POST /api/v2/dags/release__demo-api/dagRuns`` with a token from
``/auth/token``), follows both runs printing each stage's verdict, and leaves everything
running for a person to look around. The healthy version is built first (``build: true``:
the sandbox's Docker engine builds ``include/sandbox/build``, pushes it to the sandbox's
registry, and the release deploys its digest); the faulty one is released by tag.
``python -m opsdag.dev.demo down`` stops it all.
"""

from __future__ import annotations

import argparse
import sys
import time

from opsdag import paths

HEALTHY, FAULTY = "1.1.0", "1.2.0-errors"


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def up() -> int:
    from opsdag.airflow_api import AirflowClient
    from opsdag.cli.release_client import follow
    from opsdag.dev import standalone
    from opsdag.dev.sandbox import control
    from opsdag.dev.sandbox.versions import load_versions

    started = time.monotonic()
    say("starting the sandbox (PostgreSQL, demo-app fleet, HAProxy, Prometheus, load generator)")
    control.up(progress=lambda m: say(f"  {m}"))
    say("starting airflow standalone (first start creates its database: about a minute)")
    credentials = standalone.start(progress=lambda m: say(f"  {m}"))
    versions = load_versions()
    outcomes = {}
    with AirflowClient(credentials) as client:
        client.unpause("release__demo-api")
        releases = (
            (HEALTHY, "a healthy version, built here and released by digest", True),
            (FAULTY, "a version answering 8 % errors", False),
        )
        for tag, why, build in releases:
            image = versions.image_for(tag)
            say(f"releasing {why}: {image}")
            conf = {"image": image, "build": build, "reason": f"make demo: {why}"}
            run = client.trigger("release__demo-api", conf)
            say(f"  triggered run {run['dag_run_id']} through the REST API; following it")
            follow(client, "release__demo-api", run["dag_run_id"], timeout=900)
            report = client.xcom("release__demo-api", run["dag_run_id"], "report", "summary") or {}
            outcomes[tag] = report.get("status")
            say(f"  {report.get('text') or 'no report (see the run in Airflow)'}")
            if build:
                built = client.xcom("release__demo-api", run["dag_run_id"], "build") or {}
                say(f"  released by digest: {built.get('image') or 'none (see the build task log)'}")
    say(f"done in {time.monotonic() - started:.0f} s")
    say(f"reports:  {paths.reports_root() / 'release__demo-api'}")
    say(f"Airflow:  {credentials.url}   user: {credentials.username}   password: {credentials.password}")
    say("the sandbox and Airflow keep running; stop them with: make demo-down")
    if (outcomes[HEALTHY], outcomes[FAULTY]) != ("promoted", "rolled_back"):
        say(f"unexpected outcome: {HEALTHY} {outcomes[HEALTHY]}, {FAULTY} {outcomes[FAULTY]}")
        return 1
    return 0


def down() -> int:
    from opsdag.dev import standalone
    from opsdag.dev.sandbox import control

    standalone.stop(progress=say)
    control.down(progress=say)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m opsdag.dev.demo", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down"])
    args = parser.parse_args(argv)
    return up() if args.action == "up" else down()


if __name__ == "__main__":
    sys.exit(main())

"""``python -m opsdag release SERVICE --image REF [--wait]``: trigger a release through Airflow's REST API.

The request is checked here first, with the same model the DAG's first task uses
(unknown service, an image of another repository, a bad reference: refused locally,
exit 2, nothing sent). With ``--wait`` the run is followed to its end: each stage's
verdict is printed as it happens, then the report's summary. Exit codes: 0 promoted
(or planned, for a dry run); 1 rolled back, refused or failed; 2 bad input; 3 Airflow
unreachable or the run did not end within ``--timeout``.

Credentials come from the environment or a file (see :mod:`opsdag.airflow_api`), never
from the command line.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from opsdag.cli import EXIT_OK, EXIT_PROBLEMS, UsageError

EXIT_UNREACHABLE = 3
# The tasks whose end is worth a line while following a release.
_FOLLOWED = ("validate_request", "preflight", "strategy", "promote", "post_promotion_check", "rollback")
# Steps worth a line when they ran: a strategy group's (the gates have their own, with the
# verdict), and the image build (skipped in most runs: not worth a line then).
_FOLLOWED_ENDINGS = (".deploy", ".smoke", ".switch", ".replace", ".scale_down_delay")
_FOLLOWED_WHEN_RUN = ("build",)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("release", help="trigger a release of a service through the Airflow API")
    parser.add_argument("service", help="service name (include/services/<service>.yaml)")
    parser.add_argument("--image", required=True, help="full image reference: <repository>:<tag> or @sha256:")
    parser.add_argument(
        "--strategy", choices=["canary", "bluegreen", "rolling"], help="default: the service's"
    )
    parser.add_argument("--reason", default="", help="why: shown in the report and notifications")
    parser.add_argument("--build", action="store_true", help="build and push the image first")
    parser.add_argument("--dry-run", action="store_true", help="plan and report, change nothing")
    parser.add_argument(
        "--wait", action="store_true", help="follow the run to its end and print its verdicts"
    )
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds to wait with --wait (default 1800)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from opsdag.airflow_api import AirflowApiError, AirflowClient, load_credentials

    spec = _service_spec(args.service)
    conf = _request_conf(args, spec)
    dag_id = f"release__{spec.name}"
    try:
        with AirflowClient(load_credentials()) as client:
            if client.request("GET", f"/dags/{dag_id}").get("is_paused"):
                print(
                    f"python -m opsdag release: {dag_id} is paused in Airflow (a release freeze?); "
                    "nothing was triggered. Unpause it in the UI to release.",
                    file=sys.stderr,
                )
                return EXIT_PROBLEMS
            in_flight = client.active_runs(dag_id)
            triggered = client.trigger(dag_id, conf)
            run_id = triggered["dag_run_id"]
            print(
                f"triggered {dag_id} run {run_id}: {conf['image']} ({conf.get('strategy') or spec.strategy})"
            )
            for other in in_flight:
                other_run = f"run {other['dag_run_id']}, {other['state']}"
                print(
                    f"another release of {spec.name} is in flight ({other_run}): "
                    "this one is queued and starts when it ends"
                )
            if not args.wait:
                return EXIT_OK
            return follow(client, dag_id, run_id, timeout=args.timeout)
    except AirflowApiError as exc:
        print(f"python -m opsdag release: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE


def follow(client: Any, dag_id: str, run_id: str, *, timeout: float, poll: float = 1.0) -> int:
    """Print task outcomes and gate verdicts as they come; return the exit code of the outcome."""
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dag_run = client.dag_run(dag_id, run_id)
        for ti in client.task_instances(dag_id, run_id):
            _print_transition(client, dag_id, run_id, ti, seen)
        if dag_run["state"] in ("success", "failed"):
            summary = client.xcom(dag_id, run_id, "report", "summary") or {}
            status = summary.get("status", "failed")
            print(f"release {status}: {summary.get('text') or dag_run.get('note') or 'no report'}")
            if summary.get("markdown"):
                print(f"report: {summary['markdown']}")
            return EXIT_OK if status in ("promoted", "planned") else EXIT_PROBLEMS
        time.sleep(poll)
    print(f"run {run_id} did not end within {timeout:.0f} s; it goes on in Airflow", file=sys.stderr)
    return EXIT_UNREACHABLE


def _print_transition(
    client: Any, dag_id: str, run_id: str, ti: dict[str, Any], seen: dict[str, str]
) -> None:
    task_id, state = ti["task_id"], ti.get("state")
    if state in (None, "scheduled", "queued") or seen.get(task_id) == state:
        return
    seen[task_id] = state
    ran = task_id.endswith(_FOLLOWED_ENDINGS) or task_id in _FOLLOWED_WHEN_RUN
    if task_id.endswith(".gate") and state in ("success", "failed"):
        verdict = client.xcom(dag_id, run_id, task_id, "verdict") or {}
        word = "passed" if state == "success" else "FAILED"
        print(f"  {task_id.removesuffix('.gate')}: {word}: {verdict.get('reason', '')}", flush=True)
    elif task_id.endswith(".gate") and state == "deferred":
        print(f"  {task_id.removesuffix('.gate')}: judging the new version ...", flush=True)
    elif (task_id in _FOLLOWED and state in ("success", "failed", "skipped")) or (
        ran and state in ("success", "failed")
    ):
        print(f"  {task_id}: {state}", flush=True)


def _service_spec(name: str) -> Any:
    from opsdag import paths
    from opsdag.spec.loader import load_file, spec_files
    from opsdag.spec.service import ServiceSpec

    directory = paths.include_dir() / "services"
    path = directory / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(p.stem for p in spec_files(directory)) or "none"
        raise UsageError(f"no service {name!r} in {directory} (known: {known})")
    spec, errors = load_file(path, ServiceSpec)
    if spec is None:
        raise UsageError("the service spec is invalid:\n" + "\n".join(str(e) for e in errors))
    return spec


def _request_conf(args: argparse.Namespace, spec: Any) -> dict[str, Any]:
    from opsdag.platforms.registry import NoDriver
    from opsdag.spec.request import RequestRefused, validate_request
    from opsdag.strategies.choice import StrategyRefused, choose_strategy_for

    conf: dict[str, Any] = {
        "image": args.image,
        "build": args.build,
        "dry_run": args.dry_run,
        "reason": args.reason,
    }
    if args.strategy:
        conf["strategy"] = args.strategy
    try:
        request = validate_request(conf, spec)
        choose_strategy_for(request.strategy, spec)
    except RequestRefused as exc:
        raise UsageError(str(exc)) from None
    except (StrategyRefused, NoDriver) as exc:
        raise UsageError(f"release request refused:\n{exc}") from None
    return conf

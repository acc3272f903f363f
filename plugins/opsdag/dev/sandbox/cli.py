"""The command line of the sandbox, run as ``python -m opsdag.sandbox up|down|status [--json]``
and ``alerts-to URL`` (where its Alertmanager posts: Airflow's ``/opsdag/alerts``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from opsdag.dev.sandbox import control
from opsdag.dev.sandbox.alertmanager_server import point_alerts_at
from opsdag.dev.sandbox.state import Layout, SandboxError
from opsdag.dev.sandbox.status import format_status, sandbox_status
from opsdag.dev.sandbox.versions import VersionsFileError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m opsdag.sandbox",
        description="Real servers on loopback ports: demo fleet, HAProxy, Prometheus, load, PostgreSQL.",
    )
    parser.add_argument("--dir", help="state directory (default: $OPSDAG_SANDBOX_DIR or <state>/sandbox)")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start what is not running yet (safe to repeat)")
    p_up.add_argument("--rate", type=float, default=control.DEFAULT_RATE, help="load generator requests/s")
    p_up.add_argument(
        "--max-duration", type=float, default=control.DEFAULT_MAX_DURATION, help="load generator cap, s"
    )
    p_up.add_argument("--instances", type=int, default=2, help="stable processes of a new fleet (1..8)")
    p_up.add_argument("--json", action="store_true", help="print the status as JSON when up")
    p_down = sub.add_parser("down", help="stop every process of the sandbox")
    p_down.add_argument("--purge", action="store_true", help="also delete the state directory")
    p_status = sub.add_parser("status", help="what runs where; exit 0 if up, 1 if not")
    p_status.add_argument("--json", action="store_true")
    p_alerts = sub.add_parser("alerts-to", help="make Alertmanager post to <airflow url>/opsdag/alerts")
    target = p_alerts.add_mutually_exclusive_group(required=True)
    target.add_argument("url", nargs="?", help="Airflow's API server, e.g. http://127.0.0.1:8080")
    target.add_argument("--nowhere", action="store_true", help="post nowhere (a refused port)")
    args = parser.parse_args(argv)
    layout = Layout(Path(args.dir).resolve()) if args.dir else Layout.default()
    # Progress goes to stderr when stdout carries JSON.
    json_out = getattr(args, "json", False)

    def progress(message: str) -> None:
        # A closed pipe (``up | head``) must not abort a half-done up/down.
        with contextlib.suppress(OSError):
            print(message, file=sys.stderr if json_out else sys.stdout, flush=True)

    try:
        if args.command == "up":
            st = control.up(
                layout=layout,
                progress=progress,
                rate=args.rate,
                max_duration=args.max_duration,
                instances=args.instances,
            )
            print(json.dumps(st.to_dict(), indent=2) if json_out else format_status(st))
            return 0
        if args.command == "alerts-to":
            print(f"alertmanager posts to {point_alerts_at(layout, None if args.nowhere else args.url)}")
            return 0
        if args.command == "down":
            control.down(layout=layout, progress=progress, purge=args.purge)
            return 0
        st = sandbox_status(layout)
        print(json.dumps(st.to_dict(), indent=2) if json_out else format_status(st))
        return 0 if st.up else 1
    except (SandboxError, VersionsFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if args.command == "up":
            print("what did start keeps running; `python -m opsdag.sandbox down` stops it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

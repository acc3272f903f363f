"""``python -m opsdag.dev.cluster up|down|status`` (scripts/cluster)."""

from __future__ import annotations

import argparse
import json
import sys

from opsdag.dev.cluster import control


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/cluster",
        description="Airflow with the CeleryExecutor on this machine: PostgreSQL, Redis, an API server, "
        "two schedulers, a DAG processor, a triggerer and two Celery workers.",
    )
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--json", action="store_true", help="status: print JSON")
    args = parser.parse_args(argv)
    if args.command == "up":
        try:
            control.up()
        except RuntimeError as exc:
            print(f"cluster: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "down":
        control.down()
        return 0
    state = control.status()
    if args.json:
        print(json.dumps(state, indent=2))
    else:
        print(f"UI and REST API: {state['url'] or 'not running'}")
        for name, info in state["processes"].items():
            pid = f"  PID {info['pid']}" if info.get("pid") else ""
            print(f"  {name:<14} {'running' if info['running'] else 'stopped'}{pid}")
    return 0 if all(p["running"] for p in state["processes"].values()) else 3


if __name__ == "__main__":
    sys.exit(main())

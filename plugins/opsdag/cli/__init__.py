"""The opsdag command line: ``python -m opsdag <command> [...]``.

Each command lives in its own module of this package and offers ``register(subparsers)``,
which adds its sub-parser and sets ``run`` (a function of the parsed arguments returning
the exit code) as a default. Adding a command is adding a module and its entry in
``COMMANDS``.

Exit codes, for every command: 0 success, 1 the command ran and found a problem (for
``validate``: a spec is invalid), 2 the command could not run as asked (bad usage, a
path that does not exist).

The command line must start fast: a module here imports nothing heavy at its top (no
Airflow, whose import alone takes seconds); ``run`` imports what it needs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# command -> the module of this package that implements it
COMMANDS = {"validate": "validate", "release": "release_client", "wal": "wal", "kube-role": "kube_role"}

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """The command cannot run as asked; printed as ``<prog> <command>: error: <message>``, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m opsdag",
        description="opsdag: releases, backups, DR drills and runbooks as Airflow DAGs.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        importlib.import_module(f"opsdag.cli.{module}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.run(args))
    except UsageError as exc:
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

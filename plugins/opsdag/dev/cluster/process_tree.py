"""A process's ancestors and descendants, from /proc (Linux), for killing a whole tree.

Airflow's task supervisor puts each task process in a process group of its own, so signalling
a Celery worker's group does not reach its tasks; a dead machine takes them all, and the fault
tests must do the same.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable
from pathlib import Path


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, ...)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def ancestor_group(pid: int, groups: set[int]) -> int | None:
    """The first of ``groups`` that ``pid`` or one of its ancestors belongs to."""
    while pid > 1:
        fields = _stat(pid)
        if fields is None:
            return None
        if int(fields[2]) in groups:
            return int(fields[2])
        pid = int(fields[1])
    return None


def descendants(roots: set[int]) -> set[int]:
    """``roots`` and every process started from them, however deep."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = int(fields[1])
    found = set(roots)
    while more := {pid for pid, parent in parents.items() if parent in found} - found:
        found |= more
    return found


def signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    """Signal each of ``pids`` still there (one may have exited meanwhile)."""
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

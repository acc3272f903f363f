"""Detached processes that outlive their starter and can be stopped by any later caller.

The sandbox is driven from Airflow task processes that end long before the servers they
start, so every server runs in its own session (its own process group), writes to a log
file, and is recorded in a pidfile (JSON) in the state directory. Stopping signals the
whole process group, so helpers a server forks go with it. A pidfile keeps the process's
start time (from /proc) so a recycled PID is never mistaken for the server.

Orphans here may be reparented to a PID 1 that does not reap them: a zombie counts as
exited.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Popen objects of children started by this process, so they get reaped (no zombies).
_children: dict[int, subprocess.Popen[bytes]] = {}

# Runs a command and records its exit status in the file named by $0, so that any later
# caller (not only the parent) can tell "exited with status 3" from "killed".
_EXIT_RECORDER = '"$@"; rc=$?; echo "$rc" > "$0"; exit "$rc"'


class ProcessError(RuntimeError):
    """A process could not be started or stopped."""


@dataclass
class ProcessRecord:
    """What a pidfile holds about one detached process (the leader of its process group)."""

    name: str
    pid: int
    pgid: int
    start_ticks: int
    argv: list[str]
    log: str
    exit_file: str | None = None
    started_at: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, pgid, start_ticks) of ``pid`` from /proc, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[2]), int(fields[19])


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None:
        if child.poll() is not None:
            _children.pop(pid, None)
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, if given, started at ``start_ticks``."""
    _reap(pid)
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return start_ticks is None or stat[2] == start_ticks


def start_ticks_of(pid: int) -> int:
    stat = _proc_stat(pid)
    if stat is None:
        raise ProcessError(f"process {pid} does not exist")
    return stat[2]


def group_members(pgid: int) -> list[int]:
    """PIDs of the live (non-zombie) processes in process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _proc_stat(int(entry))
        if stat is not None and stat[1] == pgid and stat[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


class ProcessTable:
    """Pidfiles of detached processes under ``run_dir``, logs under ``log_dir``."""

    def __init__(self, run_dir: Path, log_dir: Path) -> None:
        self.run_dir = run_dir
        self.log_dir = log_dir

    def pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        record_exit: bool = False,
    ) -> ProcessRecord:
        """Start ``argv`` detached (own session, output to ``<log_dir>/<name>.log``) and record it.

        With ``record_exit`` the command runs under a tiny ``sh`` that writes its exit status
        to ``<run_dir>/<name>.exit``, so a crash at start can be reported with its status.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        existing = self.read(name)
        if existing is not None and self.alive(existing):
            raise ProcessError(f"{name} already runs as PID {existing.pid}")
        exit_file = self.run_dir / f"{name}.exit"
        exit_file.unlink(missing_ok=True)
        command = list(argv)
        if record_exit:
            command = ["/bin/sh", "-c", _EXIT_RECORDER, str(exit_file), *command]
        log = self.log_path(name)
        with open(log, "ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n".encode())
            out.flush()
            try:
                proc = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=cwd,
                    env=dict(env) if env is not None else None,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise ProcessError(f"cannot start {name} ({argv[0]}): {exc}") from exc
        _children[proc.pid] = proc
        record = ProcessRecord(
            name=name,
            pid=proc.pid,
            pgid=proc.pid,
            start_ticks=start_ticks_of(proc.pid),
            argv=list(argv),
            log=str(log),
            exit_file=str(exit_file) if record_exit else None,
        )
        self.write(record)
        return record

    def write(self, record: ProcessRecord) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.pidfile(record.name), record.to_json())

    def read(self, name: str) -> ProcessRecord | None:
        try:
            data = json.loads(self.pidfile(name).read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as exc:
            raise ProcessError(f"{self.pidfile(name)}: corrupt pidfile: {exc}") from exc
        return ProcessRecord(**data)

    def records(self) -> list[ProcessRecord]:
        if not self.run_dir.is_dir():
            return []
        found = []
        for path in sorted(self.run_dir.glob("*.json")):
            record = self.read(path.stem)
            if record is not None:
                found.append(record)
        return found

    @staticmethod
    def alive(record: ProcessRecord) -> bool:
        return pid_alive(record.pid, record.start_ticks)

    @staticmethod
    def group_alive(record: ProcessRecord) -> list[int]:
        """Live members of the record's process group (empty if the leader was recycled)."""
        if record.pgid != record.pid or ProcessTable.alive(record):
            return group_members(record.pgid)
        # Leader gone: members may remain (e.g. a forked helper) - but only trust the
        # group if its id was not recycled by an unrelated new session.
        return [pid for pid in group_members(record.pgid) if pid != record.pgid]

    def exit_status(self, record: ProcessRecord) -> int | None:
        """Exit status recorded by the ``record_exit`` wrapper, or None (running, or killed)."""
        if not record.exit_file:
            return None
        try:
            return int(Path(record.exit_file).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def stop(self, record: ProcessRecord, timeout: float = 10.0) -> None:
        """SIGTERM the whole process group, wait up to ``timeout``, then SIGKILL what is left."""
        if self.group_alive(record):
            _signal_group(record.pgid, signal.SIGTERM)
            if not wait_until(lambda: not self.group_alive(record), timeout):
                _signal_group(record.pgid, signal.SIGKILL)
                if not wait_until(lambda: not self.group_alive(record), 5.0):
                    raise ProcessError(
                        f"{record.name}: process group {record.pgid} survived SIGKILL: "
                        f"{self.group_alive(record)}"
                    )
        self.forget(record.name)

    def forget(self, name: str) -> None:
        self.pidfile(name).unlink(missing_ok=True)
        (self.run_dir / f"{name}.exit").unlink(missing_ok=True)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true (-> True) or ``timeout`` seconds pass (-> False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def log_tail(path: str | Path, lines: int = 15) -> str:
    """Last ``lines`` lines of a log file (empty if it does not exist)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            text = fh.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if a server could listen on ``host:port`` now (servers set SO_REUSEADDR, so
    connections of a previous server still in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def atomic_write(path: Path, text: str, mode: int | None = None) -> None:
    """Write ``text`` to ``path`` through a temporary file and rename, so readers never see half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        if mode is not None:
            os.fchmod(fh.fileno(), mode)
        fh.write(text)
    os.replace(tmp, path)

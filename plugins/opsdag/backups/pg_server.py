"""One way to run a PostgreSQL server as the ``postgres`` OS user: pg_ctl start and stop, its PID.

Used by ``tempserver.TempServer`` (a restored data directory, minutes long) and by the dev
sandbox's ``PostgresServer`` (initdb, passwords, a demo database): each keeps its own
configuration, this module only runs the server binaries.

PostgreSQL refuses to run as root. When the caller is root, the binaries run as the
``postgres`` OS user through ``setpriv`` (which needs no PAM session), else ``runuser``,
and what the server writes must belong to that user (``hand_over``). The postmaster is
started by ``pg_ctl`` in a session of its own, so its PID is also its process group:
stopping escalates from ``pg_ctl stop`` to SIGQUIT (immediate shutdown) to SIGKILL of
that group. Nothing here imports Airflow.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

from opsdag.backups.pg import ToolError, pg_tool

log = logging.getLogger(__name__)


class PgServerError(ToolError):
    """A server binary (initdb, pg_ctl) failed or timed out; the message says which, where and why."""


def server_user(name: str = "postgres") -> pwd.struct_passwd | None:
    """The OS user the server binaries run as: ``name`` when we are root, else None (ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError as exc:
        raise PgServerError(f"running as root, PostgreSQL needs the unprivileged OS user {name!r}") from exc


def as_user(argv: list[str], user: pwd.struct_passwd | None) -> list[str]:
    """``argv`` run as ``user`` (unchanged when ``user`` is None)."""
    if user is None:
        return argv
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", *argv]
    return ["runuser", "-u", user.pw_name, "--", *argv]


def hand_over(path: Path, user: pwd.struct_passwd | None) -> None:
    """Give ``path`` (recursively) to the server's OS user; make its parents traversable."""
    if user is None:
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, user.pw_uid, user.pw_gid)
        for name in dirs + files:
            with contextlib.suppress(FileNotFoundError):
                os.lchown(os.path.join(root, name), user.pw_uid, user.pw_gid)
    for parent in path.resolve().parents:
        st = parent.stat()
        if not st.st_mode & stat.S_IXOTH and st.st_uid == os.geteuid():
            os.chmod(parent, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


def blocking_parent(path: Path, user: pwd.struct_passwd) -> Path | None:
    """The first directory above ``path`` that ``user`` may not traverse, or None."""
    groups = {user.pw_gid, *os.getgrouplist(user.pw_name, user.pw_gid)}
    for parent in reversed(path.resolve().parents):
        st = parent.stat()
        if st.st_uid == user.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return parent
    return None


def alive(pid: int) -> bool:
    """``pid`` runs (a zombie, never reaped by a PID 1 that does not reap, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_gone(pid: int, seconds: float) -> bool:
    """Wait until process ``pid`` is gone; False on timeout."""
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


class PgServerProcess:
    """The server binaries of one data directory, run as the server's OS user.

    :param data_dir: PGDATA (the real path: pg_ctl is given it as is).
    :param major: PostgreSQL major version of the binaries (default: the lowest installed).
    :param os_user: the OS user the binaries run as when the caller is root.
    """

    def __init__(self, data_dir: Path, *, major: int | None = None, os_user: str = "postgres") -> None:
        self.data_dir = Path(data_dir)
        self.major = major
        self.os_user = os_user

    @property
    def user(self) -> pwd.struct_passwd | None:
        return server_user(self.os_user)

    def tool(self, name: str) -> str:
        """Path of ``initdb``, ``pg_ctl``, ``psql``... of the chosen major (one directory for all)."""
        return str(Path(pg_tool("pg_ctl", self.major)).with_name(name))

    def chown(self, path: Path) -> None:
        user = self.user
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)

    def run(self, argv: list[str], *, what: str, timeout: float, cwd: Path) -> str:
        """Run a server binary as the server's OS user in a session of its own; its stdout."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": str(cwd),
        }
        try:
            proc = subprocess.run(
                as_user(argv, self.user),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                start_new_session=True,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PgServerError(f"{what} in {self.data_dir} timed out after {timeout:.0f} s") from exc
        if proc.returncode != 0:
            output = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
            raise PgServerError(f"{what} in {self.data_dir} failed (exit {proc.returncode}): {output}")
        return proc.stdout

    def start(self, *, log_file: Path, options: str, timeout: float, cwd: Path) -> None:
        """``pg_ctl start`` with server ``options`` (``-o``), waiting until it accepts connections."""
        argv = [self.tool("pg_ctl"), "-D", str(self.data_dir), "-l", str(log_file), "-o", options]
        argv += ["-w", "-t", str(int(timeout)), "start"]
        self.run(argv, what="pg_ctl start", timeout=timeout + 30, cwd=cwd)

    def stop(self, *, mode: str = "fast", timeout: float = 60.0) -> bool:
        """Stop: ``pg_ctl stop -m mode``, then SIGQUIT, then SIGKILL to the server's process group.

        A stopped or absent server is fine (retry-safe). Returns False if the postmaster
        survived even SIGKILL (the caller says so), True once it is gone.
        """
        pid = self.pid()
        if pid is None:
            return True
        argv = [
            self.tool("pg_ctl"),
            "-D",
            str(self.data_dir),
            "-m",
            mode,
            "-w",
            "-t",
            str(int(timeout)),
            "stop",
        ]
        try:
            self.run(argv, what="pg_ctl stop", timeout=timeout + 10, cwd=self.data_dir.parent)
        except (PgServerError, OSError) as exc:
            log.warning("%s", exc)
        for sig in (signal.SIGQUIT, signal.SIGKILL):
            if wait_gone(pid, 10.0):
                break
            log.warning("PostgreSQL %s in %s still runs: sending %s", pid, self.data_dir, sig.name)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
        if not wait_gone(pid, 10.0):
            return False
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        return True

    def pid(self) -> int | None:
        """PID of the running postmaster (also its process group), or None."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        except OSError:
            return None
        if not first.isdigit():
            return None
        pid = int(first)
        return pid if alive(pid) else None

    def running(self) -> bool:
        return self.pid() is not None

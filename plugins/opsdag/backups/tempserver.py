"""A throw-away PostgreSQL server on a restored data directory (physical restores and stats).

The server listens on a unix socket only, in a private directory, on a free port number,
with its own minimal configuration (the backed-up cluster's postgresql.conf may live in
/etc or name files that are not here) and ``trust`` authentication for local socket
connections: only the owner of that directory can reach it, and it lives for minutes.

PostgreSQL refuses to run as root: as root, the data directory is handed to the
``postgres`` OS user and the server binaries run as that user (``setpriv``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from opsdag.backups.pg import PgTarget, ToolError, pg_tool

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_user(name: str = "postgres") -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError as exc:
        raise ToolError(f"running as root, PostgreSQL needs the unprivileged OS user {name!r}") from exc


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


def as_user(argv: list[str], user: pwd.struct_passwd | None) -> list[str]:
    if user is None:
        return argv
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", *argv]
    return ["runuser", "-u", user.pw_name, "--", *argv]


class TempServer:
    """``data_dir`` served from ``run_dir`` (socket, config, log) on ``port``."""

    def __init__(
        self, data_dir: Path, run_dir: Path, *, port: int | None = None, major: int | None = None
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.run_dir = Path(run_dir).absolute()
        self.port = port or free_port()
        self.major = major
        self.user = server_user()

    @property
    def log_file(self) -> Path:
        return self.run_dir / "postgres.log"

    @property
    def socket_dir(self) -> Path | None:
        """The socket's directory: a short one under /tmp (socket paths are limited to 107 bytes)."""
        try:
            return Path((self.run_dir / "socket-dir").read_text().strip())
        except OSError:
            return None

    def target(self, dbname: str, user: str) -> PgTarget:
        """Connection details (socket directory as host, trust auth: no password)."""
        if self.socket_dir is None:
            raise ToolError(f"the temporary server in {self.run_dir} was never started")
        return PgTarget(host=str(self.socket_dir), port=self.port, user=user, dbname=dbname)

    @classmethod
    def find(cls, run_dir: Path, data_dir: Path) -> TempServer:
        """The server a previous ``start()`` left in ``run_dir`` (port read from its config)."""
        port = None
        with contextlib.suppress(OSError):
            for line in (Path(run_dir) / "postgresql.conf").read_text().splitlines():
                if line.startswith("port = "):
                    port = int(line.split("=", 1)[1])
        return cls(data_dir, run_dir, port=port)

    def _write_config(self, socket_dir: Path) -> Path:
        hba = self.run_dir / "pg_hba.conf"
        hba.write_text("local all all trust\n")
        ident = self.run_dir / "pg_ident.conf"
        ident.write_text("")
        conf = self.run_dir / "postgresql.conf"
        conf.write_text(
            "\n".join(
                [
                    f"port = {self.port}",
                    "listen_addresses = ''",
                    f"unix_socket_directories = '{socket_dir}'",
                    f"hba_file = '{hba}'",
                    f"ident_file = '{ident}'",
                    "archive_mode = off",
                    "shared_preload_libraries = ''",
                    "logging_collector = off",
                    "fsync = off",
                    "synchronous_commit = off",
                    "full_page_writes = off",
                    "",
                ]
            )
        )
        return conf

    def start(self, timeout: float = 300.0) -> TempServer:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o700)
        socket_dir = Path(tempfile.mkdtemp(prefix="opsdag-pg-", dir="/tmp"))
        (self.run_dir / "socket-dir").write_text(f"{socket_dir}\n")
        hand_over(socket_dir, self.user)
        conf = self._write_config(socket_dir)
        for stale in ("postmaster.pid", "postmaster.opts"):
            (self.data_dir / stale).unlink(missing_ok=True)
        os.chmod(self.data_dir, 0o700)
        hand_over(self.data_dir, self.user)
        hand_over(self.run_dir, self.user)
        pg_ctl = pg_tool("pg_ctl", self.major)
        argv = [pg_ctl, "-D", str(self.data_dir), "-l", str(self.log_file), "-o", f"-c config_file={conf}"]
        argv += ["-w", "-t", str(int(timeout)), "start"]
        proc = subprocess.run(
            as_user(argv, self.user),
            cwd=self.run_dir,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"},
            capture_output=True,
            text=True,
            timeout=timeout + 30,
            start_new_session=True,
            check=False,
        )
        if proc.returncode != 0:
            tail = self.log_tail()
            raise ToolError(
                f"the restored server did not start (exit {proc.returncode}): {proc.stderr.strip()}\n{tail}"
            )
        return self

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        except OSError:
            return None
        if not first.isdigit():
            return None
        pid = int(first)
        return pid if _alive(pid) else None

    def running(self) -> bool:
        return self.pid() is not None

    def stop(self, timeout: float = 60.0) -> None:
        """Stop fast; kill if it does not go. A stopped or absent server is fine (retry-safe)."""
        pid = self.pid()
        if pid is None:
            return
        pg_ctl = pg_tool("pg_ctl", self.major)
        argv = [pg_ctl, "-D", str(self.data_dir), "-m", "fast", "-w", "-t", str(int(timeout)), "stop"]
        try:
            proc = subprocess.run(
                as_user(argv, self.user), capture_output=True, text=True, timeout=timeout + 10, check=False
            )
            if proc.returncode != 0:
                log.warning("pg_ctl stop of %s: %s", self.data_dir, (proc.stderr or proc.stdout).strip())
        except (subprocess.SubprocessError, OSError) as exc:
            log.warning("pg_ctl stop of %s: %s", self.data_dir, exc)
        # pg_ctl did not manage: immediate shutdown (SIGQUIT), then SIGKILL as a last resort.
        for sig in (signal.SIGQUIT, signal.SIGKILL):
            if _wait_gone(pid, 10.0):
                break
            log.warning("PostgreSQL %s in %s still runs: sending %s", pid, self.data_dir, sig.name)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        if _wait_gone(pid, 10.0):
            (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        self.remove_socket_dir()

    def remove_socket_dir(self) -> None:
        if self.socket_dir is not None and self.socket_dir.name.startswith("opsdag-pg-"):
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    def __enter__(self) -> TempServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    """``pid`` runs (a zombie, never reaped by a PID 1 that does not reap, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait_gone(pid: int, seconds: float) -> bool:
    """Wait until process ``pid`` is gone; False on timeout."""
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True

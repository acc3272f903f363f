"""A throw-away PostgreSQL server on a restored data directory (physical restores and stats).

The server listens on a unix socket only, in a private directory, on a free port number,
with its own minimal configuration (the backed-up cluster's postgresql.conf may live in
/etc or name files that are not here) and ``trust`` authentication for local socket
connections: only the owner of that directory can reach it, and it lives for minutes.

PostgreSQL refuses to run as root: as root, the data directory is handed to the
``postgres`` OS user and the server binaries run as that user (``pg_server``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path

from opsdag.backups.pg import PgTarget, ToolError
from opsdag.backups.pg_server import PgServerError, PgServerProcess, hand_over

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TempServer:
    """``data_dir`` served from ``run_dir`` (socket, config, log) on ``port``."""

    def __init__(
        self, data_dir: Path, run_dir: Path, *, port: int | None = None, major: int | None = None
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.run_dir = Path(run_dir).absolute()
        self.port = port or free_port()
        self.major = major
        self.process = PgServerProcess(self.data_dir, major=major)
        self.user = self.process.user

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
        try:
            self.process.start(
                # archive_mode on the command line too: it beats a postgresql.auto.conf restored
                # with the data (ALTER SYSTEM), so a temporary copy never pushes into the real archive
                log_file=self.log_file,
                options=f"-c config_file={conf} -c archive_mode=off",
                timeout=timeout,
                cwd=self.run_dir,
            )
        except PgServerError as exc:
            raise PgServerError(f"the restored server did not start: {exc}\n{self.log_tail()}") from None
        return self

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def pid(self) -> int | None:
        return self.process.pid()

    def running(self) -> bool:
        return self.process.running()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop fast; kill if it does not go. A stopped or absent server is fine (retry-safe)."""
        if not self.process.stop(mode="fast", timeout=timeout):
            log.warning("PostgreSQL in %s survived SIGKILL", self.data_dir)
        self.remove_socket_dir()

    def remove_socket_dir(self) -> None:
        if self.socket_dir is not None and self.socket_dir.name.startswith("opsdag-pg-"):
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    def __enter__(self) -> TempServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

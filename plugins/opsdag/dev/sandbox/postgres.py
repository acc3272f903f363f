"""A PostgreSQL server in a directory on a free loopback port, for the sandbox and for tests.

``PostgresServer(directory).start()`` runs ``initdb`` once (superuser password generated
and kept in a 0600 file, never on a command line), then ``pg_ctl start`` on 127.0.0.1.
Clients authenticate with scram-sha-256 through a libpq *passfile* (``dsn()`` and
``env()`` name it), so the password never appears in a DSN, a log or a process list.

PostgreSQL refuses to run as root. When the caller is root, the server binaries run as
the ``postgres`` OS user (via ``setpriv``, which needs no PAM session, falling back to
``runuser``) and ``data/`` and ``run/`` are owned by that user. That user must be able
to traverse every directory above them. Where it cannot - typically pytest's
``/tmp/pytest-of-root``, which is 0700 and which every new pytest session resets to 0700
- ``data/`` and ``run/`` are symlinks to a directory under ``<tmp>/opsdag-postgres/``
and the server is given the real paths. ``destroy()`` removes that directory too.

Layout of ``directory``::

    data/         PGDATA (owned by the server's OS user, 0700)
    run/          unix socket and server log (owned by the server's OS user)
    password      superuser password (0600, owned by the caller)
    pgpass        the same in libpq passfile format (0600)
    server.json   port last used, so a restart keeps the same address when it can
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from opsdag.dev.sandbox.processes import (
    atomic_write,
    free_port,
    group_members,
    log_tail,
    pid_alive,
    port_free,
)

DEFAULT_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")


RELOCATION_ROOT = "opsdag-postgres"


class PostgresServerError(RuntimeError):
    """The server could not be initialised, started, stopped or queried; says which and why."""


def find_bin_dir() -> Path:
    """Directory holding initdb/pg_ctl/psql: ``$OPSDAG_PG_BIN``, Debian's versioned dirs, or $PATH."""
    env = os.environ.get("OPSDAG_PG_BIN")
    candidates = [env] if env else []
    candidates += list(DEFAULT_BIN_DIRS)
    for candidate in candidates:
        if candidate and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise PostgresServerError(
        "PostgreSQL server binaries (pg_ctl, initdb) not found: install postgresql "
        "or set OPSDAG_PG_BIN to their directory"
    )


class PostgresServer:
    """One PostgreSQL server whose whole state lives in ``directory``.

    Idempotent: ``start()`` on a running server and ``stop()`` on a stopped one do nothing.
    Usable as a context manager (start on enter, stop on exit).
    """

    def __init__(
        self,
        directory: str | Path,
        port: int | None = None,
        *,
        superuser: str = "postgres",
        host: str = "127.0.0.1",
        settings: Mapping[str, str | int] | None = None,
        bin_dir: str | Path | None = None,
        os_user: str = "postgres",
    ) -> None:
        self.directory = Path(directory).absolute()
        self._port = port
        self.superuser = superuser
        self.host = host
        self.settings = dict(settings or {})
        self._bin_dir = Path(bin_dir) if bin_dir else None
        self._os_user = os_user

    # -- paths and connection details ------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def run_dir(self) -> Path:
        return self.directory / "run"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "postgres.log"

    @property
    def password_file(self) -> Path:
        return self.directory / "password"

    @property
    def passfile(self) -> Path:
        """libpq passfile (``host:port:db:user:password``) for ``PGPASSFILE`` / ``passfile=``."""
        return self.directory / "pgpass"

    @property
    def password(self) -> str:
        try:
            return self.password_file.read_text().strip()
        except FileNotFoundError as exc:
            raise PostgresServerError(f"no password yet: {self.directory} is not initialised") from exc

    @property
    def port(self) -> int:
        if self._port is None:
            saved = self._saved().get("port")
            if saved is None:
                raise PostgresServerError(f"the server in {self.directory} has no port yet: start() it first")
            self._port = int(saved)
        return self._port

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq conninfo without the password (it names the passfile instead)."""
        return (
            f"host={self.host} port={self.port} user={self.superuser} dbname={dbname} "
            f"passfile={self.passfile} sslmode=disable"
        )

    def uri(self, dbname: str = "postgres") -> str:
        """``postgresql://user@host:port/db`` (no password; use ``password`` or the passfile)."""
        return f"postgresql://{self.superuser}@{self.host}:{self.port}/{dbname}"

    def env(self, dbname: str | None = None) -> dict[str, str]:
        """Environment for libpq clients (psql, pg_dump, pg_restore): PGHOST, PGPORT, PGUSER, PGPASSFILE."""
        env = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.superuser,
            "PGPASSFILE": str(self.passfile),
            "PGSSLMODE": "disable",
        }
        if dbname:
            env["PGDATABASE"] = dbname
        return env

    def info(self) -> dict[str, Any]:
        """Connection details safe to print or store (no password)."""
        return {
            "host": self.host,
            "port": self._port if self._port is not None else self._saved().get("port"),
            "user": self.superuser,
            "password_file": str(self.password_file),
            "passfile": str(self.passfile),
            "data_dir": str(self.data_dir),
            "cluster_dir": str(self.data_dir.resolve()),
            "log": str(self.log_file),
        }

    def bin(self, name: str) -> str:
        if self._bin_dir is None:
            self._bin_dir = find_bin_dir()
        return str(self._bin_dir / name)

    # -- lifecycle ------------------------------------------------------------------

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists() and self.password_file.exists()

    def init(self) -> None:
        """initdb with a generated superuser password (skipped if already initialised)."""
        if self.initialized:
            return
        self._prepare_dirs()
        if any(self.data_dir.iterdir()):
            raise PostgresServerError(
                f"{self.data_dir} is not empty but holds no complete cluster; remove it to re-initialise"
            )
        password = secrets.token_urlsafe(24)
        tmp_pw = self.run_dir.resolve() / ".initdb-pw"
        atomic_write(tmp_pw, password + "\n", mode=0o600)
        self._chown(tmp_pw)
        try:
            self._run(
                [
                    self.bin("initdb"),
                    "-D",
                    str(self.data_dir.resolve()),
                    "-U",
                    self.superuser,
                    f"--pwfile={tmp_pw}",
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                as_server_user=True,
                what="initdb",
                timeout=120,
            )
        finally:
            tmp_pw.unlink(missing_ok=True)
        atomic_write(self.password_file, password + "\n", mode=0o600)
        atomic_write(self.passfile, f"*:*:*:{self.superuser}:{password}\n", mode=0o600)

    def start(self, timeout: float = 60.0) -> PostgresServer:
        """Initialise if needed and start on ``port`` (or a free one); no-op if already running."""
        self.init()
        if self.running():
            return self
        self._prepare_dirs()
        explicit = self._port is not None
        port = self._port if explicit else self._saved().get("port")
        if port is None or (not explicit and not port_free(int(port), self.host)):
            port = free_port(self.host)
        self._port = int(port)
        self._write_conf()
        self._save({"port": self._port})
        self.log_file.unlink(missing_ok=True)
        try:
            self._run(
                [
                    self.bin("pg_ctl"),
                    "-D",
                    str(self.data_dir.resolve()),
                    "-l",
                    str(self.log_file.resolve()),
                    "-o",
                    f"-p {self._port}",
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "start",
                ],
                as_server_user=True,
                what="pg_ctl start",
                timeout=timeout + 10,
            )
        except PostgresServerError as exc:
            raise PostgresServerError(f"{exc}\n--- {self.log_file} ---\n{log_tail(self.log_file)}") from None
        return self

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """``pg_ctl stop`` and make sure no server process of this directory is left."""
        pid = self.pid()
        if pid is None:
            return
        try:
            self._run(
                [
                    self.bin("pg_ctl"),
                    "-D",
                    str(self.data_dir.resolve()),
                    "-m",
                    mode,
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "stop",
                ],
                as_server_user=True,
                what="pg_ctl stop",
                timeout=timeout + 10,
            )
        except PostgresServerError:
            if pid_alive(pid):
                os.killpg(pid, 9)
        deadline = time.monotonic() + 10
        while group_members(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if group_members(pid):
            raise PostgresServerError(
                f"PostgreSQL in {self.data_dir} did not stop: PIDs {group_members(pid)} remain"
            )

    def destroy(self) -> None:
        """Stop and delete everything: the directory and, if relocated, the real cluster."""
        self.stop(mode="immediate")
        self.remove_relocated()
        shutil.rmtree(self.directory, ignore_errors=True)

    def remove_relocated(self) -> None:
        """Delete the relocated cluster (if any) of a stopped server, keeping ``directory``."""
        if self.running():
            raise PostgresServerError(f"PostgreSQL in {self.directory} still runs: stop() it first")
        if self.data_dir.is_symlink():
            shutil.rmtree(self.data_dir.resolve().parent, ignore_errors=True)
            for link in (self.data_dir, self.run_dir):
                link.unlink(missing_ok=True)

    def pid(self) -> int | None:
        """PID of the running postmaster (also its process group), or None."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except (FileNotFoundError, PermissionError):
            return None
        pid = int(first) if first.strip().isdigit() else None
        if pid is None or not pid_alive(pid):
            return None
        return pid

    def running(self) -> bool:
        return self.pid() is not None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- SQL through psql -----------------------------------------------------------

    def psql(self, sql: str, dbname: str = "postgres", timeout: float = 60.0) -> str:
        """Run ``sql`` with psql (stop at the first error); returns unaligned, tuples-only output."""
        env = {**os.environ, **self.env(dbname)}
        proc = subprocess.run(
            [self.bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"],
            input=sql,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise PostgresServerError(
                f"psql on {self.host}:{self.port}/{dbname} failed: {proc.stderr.strip()}"
            )
        return proc.stdout

    def create_database(self, name: str) -> bool:
        """Create database ``name`` unless it exists; True if it was created."""
        literal = name.replace("'", "''")
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{literal}';").strip()
        if exists:
            return False
        ident = name.replace('"', '""')
        self.psql(f'CREATE DATABASE "{ident}";')
        return True

    # -- internals ------------------------------------------------------------------

    def _server_user(self) -> pwd.struct_passwd | None:
        """The OS user the server binaries run as, or None to run them as ourselves."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(self._os_user)
        except KeyError as exc:
            raise PostgresServerError(
                f"as root, PostgreSQL needs an unprivileged OS user, but {self._os_user!r} does not exist"
            ) from exc

    def _chown(self, path: Path) -> None:
        user = self._server_user()
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)

    def _server_root(self) -> Path:
        """Where data/ and run/ really live: ``directory``, or a relocated one (see module doc)."""
        user = self._server_user()
        if user is None:
            return self.directory
        if self.data_dir.is_symlink():  # relocated before: stay there
            return self.data_dir.resolve().parent
        if self.data_dir.is_dir() or _blocking_parent(self.directory, user) is None:
            return self.directory
        digest = hashlib.sha256(str(self.directory).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / RELOCATION_ROOT / digest

    def _prepare_dirs(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        user = self._server_user()
        root = self._server_root()
        if user is not None:
            for path in (root.parent, root) if root != self.directory else (root,):
                path.mkdir(mode=0o711, exist_ok=True)
                os.chmod(path, 0o711)
            blocker = _blocking_parent(root, user)
            if blocker is not None:
                raise PostgresServerError(
                    f"PostgreSQL runs as OS user {user.pw_name!r}, which cannot enter {blocker}; "
                    f"put {self.directory} under a directory it can traverse"
                )
        for link in (self.data_dir, self.run_dir):
            target = root / link.name
            target.mkdir(mode=0o700, exist_ok=True)
            os.chmod(target, 0o700)
            self._chown(target)
            if root != self.directory and not (link.is_symlink() and link.resolve() == target):
                link.unlink(missing_ok=True)
                link.symlink_to(target, target_is_directory=True)

    def _write_conf(self) -> None:
        """Settings appended to postgresql.conf's include: loopback only, socket in run/."""
        lines = [
            "# Written by opsdag.dev.sandbox.postgres on every start.",
            f"listen_addresses = '{self.host}'",
            f"unix_socket_directories = '{self.run_dir.resolve()}'",
            "logging_collector = off",
        ]
        for key, value in self.settings.items():
            text = str(value).replace("'", "''")
            lines.append(f"{key} = '{text}'")
        conf = self.data_dir / "opsdag.conf"
        atomic_write(conf, "\n".join(lines) + "\n")
        self._chown(conf)
        main_conf = self.data_dir / "postgresql.conf"
        content = main_conf.read_text()
        if "include_if_exists = 'opsdag.conf'" not in content:
            with open(main_conf, "a") as fh:
                fh.write("\ninclude_if_exists = 'opsdag.conf'\n")

    def _run(self, argv: list[str], *, as_server_user: bool, what: str, timeout: float) -> str:
        command = list(argv)
        user = self._server_user() if as_server_user else None
        if user is not None:
            if shutil.which("setpriv"):
                command = [
                    "setpriv",
                    f"--reuid={user.pw_uid}",
                    f"--regid={user.pw_gid}",
                    "--init-groups",
                    *command,
                ]
            else:
                command = ["runuser", "-u", user.pw_name, "--", *command]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": str(self.directory),
        }
        try:
            proc = subprocess.run(
                command,
                cwd=self.data_dir.resolve().parent,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PostgresServerError(f"{what} in {self.directory} timed out after {timeout:.0f} s") from exc
        if proc.returncode != 0:
            output = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
            raise PostgresServerError(f"{what} in {self.directory} failed (exit {proc.returncode}): {output}")
        return proc.stdout

    def _saved(self) -> dict[str, Any]:
        try:
            return json.loads((self.directory / "server.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _save(self, data: dict[str, Any]) -> None:
        atomic_write(self.directory / "server.json", json.dumps(data) + "\n")


def _blocking_parent(path: Path, user: pwd.struct_passwd) -> Path | None:
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

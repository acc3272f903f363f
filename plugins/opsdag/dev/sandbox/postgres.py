"""A PostgreSQL server in a directory on a free loopback port, for the sandbox and for tests.

``PostgresServer(directory).start()`` runs ``initdb`` once (superuser password generated
and kept in a 0600 file, never on a command line), then ``pg_ctl start`` on 127.0.0.1.
Clients authenticate with scram-sha-256 through a libpq *passfile* (``dsn()`` and
``env()`` name it), so the password never appears in a DSN, a log or a process list.

PostgreSQL refuses to run as root. When the caller is root, the server binaries run as
the ``postgres`` OS user (``opsdag.backups.pg_server``, shared with the backups' temporary
server) and ``data/`` and ``run/`` are owned by that user; where that user cannot reach
``directory``, they live elsewhere (``pg_relocation``). ``destroy()`` removes them too.

Layout of ``directory``::

    data/         PGDATA (owned by the server's OS user, 0700)
    run/          unix socket and server log (owned by the server's OS user)
    password      superuser password (0600, owned by the caller)
    pgpass        the same in libpq passfile format (0600)
    server.json   port last used, so a restart keeps the same address when it can
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from opsdag.backups.pg_server import PgServerError, PgServerProcess
from opsdag.dev.sandbox import pg_relocation
from opsdag.dev.sandbox.processes import atomic_write, free_port, log_tail, port_free


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
        os_user: str = "postgres",
    ) -> None:
        self.directory = Path(directory).absolute()
        self._port = port
        self.superuser = superuser
        self.host = host
        self.settings = dict(settings or {})
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
            raise PgServerError(f"no password yet: {self.directory} is not initialised") from exc

    @property
    def port(self) -> int:
        if self._port is None:
            saved = self._saved().get("port")
            if saved is None:
                raise PgServerError(f"the server in {self.directory} has no port yet: start() it first")
            self._port = int(saved)
        return self._port

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq conninfo without the password (it names the passfile instead)."""
        return (
            f"host={self.host} port={self.port} user={self.superuser} dbname={dbname} "
            f"passfile={self.passfile} sslmode=disable"
        )

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
        return self._process().tool(name)

    def _process(self) -> PgServerProcess:
        """The server binaries of the real data directory (``data/`` may be a symlink)."""
        return PgServerProcess(self.data_dir.resolve(), os_user=self._os_user)

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
            raise PgServerError(
                f"{self.data_dir} is not empty but holds no complete cluster; remove it to re-initialise"
            )
        password = secrets.token_urlsafe(24)
        tmp_pw = self.run_dir.resolve() / ".initdb-pw"
        atomic_write(tmp_pw, password + "\n", mode=0o600)
        server = self._process()
        server.chown(tmp_pw)
        try:
            initdb = [
                self.bin("initdb"),
                "-D",
                str(server.data_dir),
                "-U",
                self.superuser,
                f"--pwfile={tmp_pw}",
            ]
            initdb += ["--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "--encoding=UTF8"]
            initdb += ["--locale=C", "--no-sync"]
            server.run(initdb, what="initdb", timeout=120, cwd=server.data_dir.parent)
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
        server = self._process()
        try:
            server.start(
                log_file=self.log_file.resolve(),
                options=f"-p {self._port}",
                timeout=timeout,
                cwd=server.data_dir.parent,
            )
        except PgServerError as exc:
            raise PgServerError(f"{exc}\n--- {self.log_file} ---\n{log_tail(self.log_file)}") from None
        return self

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """``pg_ctl stop`` (then SIGQUIT, SIGKILL) and make sure the server is gone."""
        if not self._process().stop(mode=mode, timeout=timeout):
            raise PgServerError(f"PostgreSQL in {self.data_dir} did not stop, not even on SIGKILL")

    def destroy(self) -> None:
        """Stop and delete everything: the directory and, if relocated, the real cluster."""
        self.stop(mode="immediate")
        self.remove_relocated()
        shutil.rmtree(self.directory, ignore_errors=True)

    def remove_relocated(self) -> None:
        """Delete the relocated cluster (if any) of a stopped server, keeping ``directory``."""
        if self.running():
            raise PgServerError(f"PostgreSQL in {self.directory} still runs: stop() it first")
        pg_relocation.remove_relocated(self.directory)

    def pid(self) -> int | None:
        """PID of the running postmaster (also its process group), or None."""
        return self._process().pid()

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
            raise PgServerError(f"psql on {self.host}:{self.port}/{dbname} failed: {proc.stderr.strip()}")
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

    def _chown(self, path: Path) -> None:
        self._process().chown(path)

    def _prepare_dirs(self) -> None:
        pg_relocation.prepare_dirs(self.directory, self._process().user, self._chown)

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

    def _saved(self) -> dict[str, Any]:
        try:
            return json.loads((self.directory / "server.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _save(self, data: dict[str, Any]) -> None:
        atomic_write(self.directory / "server.json", json.dumps(data) + "\n")

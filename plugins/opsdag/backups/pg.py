"""PostgreSQL connection details, client tools and how they are run, without Airflow.

Credentials reach the client tools through a libpq *passfile* written 0600 in a private
temporary directory for the duration of one command and deleted after it: never on a
command line (visible in ``/proc/<pid>/cmdline``), never in the environment (visible in
``/proc/<pid>/environ`` to the same user), never in a log line. Host, port, user and
database go through ``PGHOST``/``PGPORT``/``PGUSER``/``PGDATABASE`` as well, so the argv
of every tool holds only options and paths.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from opsdag.format import duration

log = logging.getLogger(__name__)

_LIBPQ_EXTRAS = ("sslmode", "sslcert", "sslkey", "sslrootcert", "connect_timeout", "application_name")
_ENV_OF = {
    "sslmode": "PGSSLMODE",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslrootcert": "PGSSLROOTCERT",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
}


class ToolError(RuntimeError):
    """A client tool (pg_dump, pg_restore, ...) failed; the message has its last output lines."""


@dataclass(frozen=True)
class PgTarget:
    """Where a database is and how to log in. The password is never shown by ``repr``."""

    host: str
    port: int
    user: str
    dbname: str
    password: str | None = field(default=None, repr=False)
    options: Mapping[str, str] = field(default_factory=dict)

    def with_db(self, dbname: str) -> PgTarget:
        return replace(self, dbname=dbname)

    @property
    def address(self) -> str:
        """``host:port/db`` (safe to log)."""
        return f"{self.host}:{self.port}/{self.dbname}"

    def connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": self.dbname,
        }
        if self.password is not None:
            kwargs["password"] = self.password
        kwargs.setdefault("connect_timeout", 10)
        kwargs.update({k: v for k, v in self.options.items() if k in _LIBPQ_EXTRAS})
        return kwargs

    def connect(self, *, autocommit: bool = True):
        """A psycopg (3) connection; the password goes to libpq in-process, not through argv."""
        import psycopg

        return psycopg.connect(autocommit=autocommit, **self.connect_kwargs())

    @contextlib.contextmanager
    def tool_env(self, base: Mapping[str, str] | None = None) -> Iterator[dict[str, str]]:
        """Environment for libpq client tools, with a passfile that is deleted afterwards."""
        env = {k: v for k, v in (base if base is not None else os.environ).items() if not k.startswith("PG")}
        env.update(
            {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user, "PGDATABASE": self.dbname}
        )
        for key, value in self.options.items():
            if key in _ENV_OF:
                env[_ENV_OF[key]] = str(value)
        env.setdefault("PGCONNECT_TIMEOUT", "10")
        if self.password is None:
            yield env
            return
        directory = tempfile.mkdtemp(prefix="opsdag-pgpass-")
        try:
            passfile = Path(directory) / "pgpass"
            fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(f"*:*:*:{_passfile_escape(self.user)}:{_passfile_escape(self.password)}\n")
            env["PGPASSFILE"] = str(passfile)
            yield env
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def _passfile_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def target_from_connection(conn: Any, dbname: str | None = None) -> PgTarget:
    """A ``PgTarget`` from an Airflow ``Connection`` (host, port, login, password, schema, extra)."""
    extra = dict(getattr(conn, "extra_dejson", None) or {})
    name = dbname or conn.schema or "postgres"
    return PgTarget(
        host=conn.host or "localhost",
        port=int(conn.port or 5432),
        user=conn.login or "postgres",
        dbname=name,
        password=conn.password or None,
        options={k: str(v) for k, v in extra.items() if k in _LIBPQ_EXTRAS},
    )


# -- client tools ---------------------------------------------------------------------


def installed_majors() -> list[int]:
    root = Path("/usr/lib/postgresql")
    majors = []
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name.isdigit() and (entry / "bin").is_dir():
                majors.append(int(entry.name))
    return sorted(majors)


def pg_tool(name: str, server_major: int | None = None) -> str:
    """Path of a client tool able to talk to a server of ``server_major``.

    ``$OPSDAG_PG_BIN`` wins; then Debian's ``/usr/lib/postgresql/<major>/bin``, the lowest
    major not older than the server (pg_dump refuses newer servers, and matching majors
    keep dumps readable by the same pg_restore); then ``$PATH``.
    """
    override = os.environ.get("OPSDAG_PG_BIN")
    if override and (Path(override) / name).exists():
        return str(Path(override) / name)
    majors = installed_majors()
    usable = [m for m in majors if server_major is None or m >= server_major]
    for major in usable or reversed(majors):
        candidate = Path(f"/usr/lib/postgresql/{major}/bin/{name}")
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise ToolError(f"{name} not found: install the PostgreSQL client tools or set OPSDAG_PG_BIN")


def tool_major(tool_path: str) -> int:
    out = subprocess.run([tool_path, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    if not match:
        raise ToolError(f"cannot read the version of {tool_path}: {out!r}")
    return int(match.group(1))


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the task process dies, so no tool outlives its task."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class ToolRun:
    argv: list[str]
    returncode: int
    seconds: float
    output: list[str]


def run_tool(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    what: str | None = None,
    cwd: str | Path | None = None,
    timeout: float | None = None,
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
    logger: logging.Logger | None = None,
    check: bool = True,
    keep_lines: int = 40,
) -> ToolRun:
    """Run a client tool in its own process group, streaming its output to the log.

    The tool (and any worker it forks) is killed if this call is interrupted: a task that
    is stopped or times out leaves no pg_dump behind.
    """
    logger = logger or log
    what = what or Path(argv[0]).name
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=keep_lines)
    proc = subprocess.Popen(
        list(argv),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    try:
        if on_start is not None:
            on_start(proc)
        reader = threading.Thread(target=_pump, args=(proc, tail, logger, what), daemon=True)
        reader.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise ToolError(f"{what} did not finish within {duration(timeout)}") from exc
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            _kill_group(proc)
    seconds = time.monotonic() - started
    run = ToolRun(list(argv), proc.returncode, seconds, list(tail))
    if check and proc.returncode != 0:
        detail = "\n".join(tail) or "(no output)"
        raise ToolError(f"{what} failed with exit status {proc.returncode}:\n{detail}")
    return run


def _pump(proc: subprocess.Popen[bytes], tail: deque[str], logger: logging.Logger, what: str) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode("utf-8", "replace").rstrip()
        if line:
            tail.append(line)
            logger.info("%s: %s", what, line)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}"


def server_info(conn: Any) -> dict[str, Any]:
    """Version, size and clock of the server behind a psycopg connection."""
    row = conn.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int, "
        "pg_database_size(current_database()), current_database(), now()"
    ).fetchone()
    return {
        "server_version": row[0],
        "server_version_num": row[1],
        "database_bytes": int(row[2]),
        "dbname": row[3],
        "server_time": row[4].isoformat(),
    }

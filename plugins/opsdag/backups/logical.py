"""Logical backups: ``pg_dump`` in directory format; per-table row counts and sha256 of what it wrote.

Whole (~300 lines): dump and restore of one on-disk layout, kept together so that they agree.

One REPEATABLE READ, READ ONLY transaction exports its snapshot (``pg_export_snapshot()``)
and ``pg_dump --snapshot`` dumps exactly that snapshot with its parallel workers. The
per-table proof (rows and a ``copy-sha256-v1`` checksum, see copy_checksum.py) is read
from pg_dump's own data files while pg_dump writes them (dump_digest.py): the rows
counted and hashed are exactly the rows in the dump, and the server reads every table
once, as it does for ``pg_dump`` by hand. (Until Backups v2 a second scan of every
table in the same snapshot computed ``record-hash-v1``/``text-hash-v1`` sums while
pg_dump ran: 1.26-1.36x the dump alone on a 2-core machine, the scan competing with
pg_dump for the cores. Drills still verify those older manifests the old way.)

Compression: gzip by pg_dump; zstd by pg_dump from PostgreSQL 16 on, and for older
pg_dump (15 has gzip only) by the ``zstd`` CLI on each data file after the dump
(``NNNN.dat`` -> ``NNNN.dat.zst``; ``toc.dat`` stays plain, so ``pg_restore --list``
reads it as is, and restore decompresses the data files into a scratch copy first).
The digest reader inflates gzip files; zstd files written by pg_dump 16+ are hashed by
the slower second-scan method instead (no zstd decoder in the standard library).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opsdag.backups import copy_checksum, dump_digest
from opsdag.backups import stats as table_stats
from opsdag.backups.pg import PgTarget, ToolError, pg_tool, run_tool, server_info, tool_major
from opsdag.format import size

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DumpOptions:
    jobs: int = 2
    compression: str = "gzip"  # gzip | zstd | none
    level: int = 6
    table_checksums: bool = True
    timeout: float | None = None


def compression_args(compression: str, level: int, dump_major: int) -> tuple[list[str], dict[str, Any]]:
    """pg_dump's compression options and how the manifest describes the result."""
    if compression == "gzip":
        level = min(level, 9)
        args = [f"--compress={level}"] if dump_major < 16 else [f"--compress=gzip:{level}"]
        return args, {"algorithm": "gzip", "level": level, "applied_by": "pg_dump"}
    if compression == "zstd":
        if dump_major >= 16:
            return [f"--compress=zstd:{level}"], {
                "algorithm": "zstd",
                "level": level,
                "applied_by": "pg_dump",
            }
        return ["--compress=0"], {"algorithm": "zstd", "level": level, "applied_by": "opsdag"}
    if compression == "none":
        return ["--compress=0"], {"algorithm": "none", "level": None, "applied_by": "none"}
    raise ValueError(f"unknown compression {compression!r}: use gzip, zstd or none")


def dump_argv(
    pg_dump: str,
    out_dir: Path,
    *,
    jobs: int,
    snapshot: str | None,
    compress: list[str],
    encoding: str | None = None,
) -> list[str]:
    """The pg_dump command line: options and a path only (connection details are in the env)."""
    argv = [pg_dump, "--format=directory", f"--jobs={jobs}", *compress, "--no-password"]
    if encoding:
        argv.append(f"--encoding={encoding}")
    if snapshot:
        argv.append(f"--snapshot={snapshot}")
    argv.append(f"--file={out_dir}")
    return argv


def zstd_files(directory: Path, level: int, threads: int, logger: logging.Logger) -> None:
    """Compress every ``*.dat`` data file (not ``toc.dat``) in place with the zstd CLI."""
    zstd = shutil.which("zstd")
    if zstd is None:
        raise ToolError("compression zstd with pg_dump < 16 needs the zstd command (Debian package zstd)")
    files = sorted(str(p) for p in directory.glob("*.dat") if p.name != "toc.dat")
    if files:
        run_tool(
            [zstd, "-q", f"-{min(level, 19)}", f"-T{threads}", "--rm", *files],
            env=os.environ,
            what="zstd",
            logger=logger,
        )


def dump(
    source: PgTarget,
    out_dir: Path,
    options: DumpOptions,
    *,
    on_start: Any = None,
    logger: logging.Logger | None = None,
) -> dict[str, Any]:
    """Dump ``source`` into ``out_dir`` (must not exist); returns what the manifest needs.

    ``on_start(popen)`` is called once pg_dump runs (tests read its /proc entry).
    """
    logger = logger or log
    started = datetime.now(UTC)
    t0 = time.monotonic()
    conn = source.connect(autocommit=True)
    try:
        server = server_info(conn)
        major = server["server_version_num"] // 10000
        pg_dump = pg_tool("pg_dump", major)
        dump_major = tool_major(pg_dump)
        compress, compression = compression_args(options.compression, options.level, dump_major)
        digest_files = not (compression["algorithm"] == "zstd" and compression["applied_by"] == "pg_dump")

        import psycopg

        conn.autocommit = False
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        snapshot, consistent_at = conn.execute(
            "SELECT pg_export_snapshot(), statement_timestamp()"
        ).fetchone()
        tables = table_stats.list_tables(conn)
        columns = copy_checksum.table_columns(conn)
        settings = copy_checksum.session_settings(conn)
        argv = dump_argv(
            pg_dump,
            out_dir,
            jobs=options.jobs,
            snapshot=snapshot,
            compress=compress,
            encoding=settings["client_encoding"],
        )
        logger.info(
            "pg_dump of %s (PostgreSQL %s, %s) at snapshot %s: %d tables, %s",
            source.address,
            server["server_version"],
            size(server["database_bytes"]),
            snapshot,
            len(tables),
            " ".join(argv[1:]),
        )
        watcher = dump_digest.Watcher(out_dir).start() if digest_files else None
        try:
            with source.tool_env() as env:
                env.update(copy_checksum.dump_env(settings))
                run = run_tool(
                    argv, env=env, what="pg_dump", on_start=on_start, logger=logger, timeout=options.timeout
                )
        except BaseException:
            if watcher is not None:
                watcher.abandon()
            raise
        t_stats = time.monotonic()
        if watcher is not None:
            digests = watcher.result()
            toc = list_toc(out_dir, server_major=major)
            captured = copy_checksum.table_digests(toc, digests, columns, tables, options.table_checksums)
        else:  # pg_dump 16+ with zstd: the second scan, in the same (still open) snapshot
            table_stats.pin_session(conn)  # SET in a transaction: undone by its rollback
            captured = table_stats.capture(conn, checksum=options.table_checksums, tables=tables)
        stats_seconds = time.monotonic() - t_stats
        conn.rollback()
    finally:
        conn.close()
    if compression["applied_by"] == "opsdag":
        zstd_files(out_dir, options.level, options.jobs, logger)
    finished = datetime.now(UTC)
    return {
        "method": "logical",
        "dbname": source.dbname,
        "started": started.isoformat(),
        "finished": finished.isoformat(),
        "consistent_at": consistent_at.astimezone(UTC).isoformat(),
        "server_version": server["server_version"],
        "server_version_num": server["server_version_num"],
        "database_bytes": server["database_bytes"],
        "tool": {
            "name": "pg_dump",
            "major": dump_major,
            "argv": [Path(argv[0]).name, *argv[1:-1], "--file=<dir>"],
        },
        "compression": compression,
        "snapshot": snapshot,
        "table_checksums": options.table_checksums,
        "table_checksum_settings": settings,
        "tables": [t.to_dict() for t in captured],
        "timings": {
            "dump_seconds": round(run.seconds, 3),
            # what the digests took after pg_dump ended (they run while it writes)
            "stats_seconds": round(stats_seconds, 3),
            "total_seconds": round(time.monotonic() - t0, 3),
        },
    }


# -- restore -------------------------------------------------------------------------


def restorable_dir(dump_dir: Path, scratch: Path, logger: logging.Logger | None = None) -> Path:
    """``dump_dir`` itself, or a copy in ``scratch`` with opsdag's zstd files decompressed."""
    zst = sorted(dump_dir.glob("*.dat.zst"))
    if not zst:
        return dump_dir
    zstd = shutil.which("zstd")
    if zstd is None:
        raise ToolError("this backup's data files are zstd-compressed: install the zstd command")
    out = scratch / "dump"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for file in dump_dir.iterdir():
        if file.is_file() and not file.name.endswith(".zst"):
            shutil.copy2(file, out / file.name)
    run_tool(
        [zstd, "-q", "-d", "--output-dir-flat", str(out), *map(str, zst)],
        env=os.environ,
        what="zstd -d",
        logger=logger or log,
    )
    return out


def restore_argv(pg_restore: str, dump_dir: Path, *, jobs: int) -> list[str]:
    """pg_restore into the database named by PGDATABASE; objects owned by the restoring user."""
    return [
        pg_restore,
        "--format=directory",
        f"--jobs={jobs}",
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--no-password",
        # pg_restore writes SQL to stdout unless -d names a database: an empty URI takes
        # host, port, user and database from the PG* environment (no name on the command line).
        "--dbname=postgresql://",
        str(dump_dir),
    ]


def restore(
    target: PgTarget,
    dump_dir: Path,
    *,
    jobs: int,
    scratch: Path,
    logger: logging.Logger | None = None,
    on_start: Any = None,
) -> dict[str, Any]:
    """``pg_restore -j`` of a directory-format dump into ``target`` (an existing, empty database)."""
    logger = logger or log
    with target.connect() as conn:
        major = conn.info.server_version // 10000
    pg_restore = pg_tool("pg_restore", major)
    t0 = time.monotonic()
    source = restorable_dir(dump_dir, scratch, logger)
    prepare_seconds = time.monotonic() - t0
    argv = restore_argv(pg_restore, source, jobs=jobs)
    logger.info("pg_restore into %s: %s", target.address, " ".join(argv[1:]))
    with target.tool_env() as env:
        run = run_tool(argv, env=env, what="pg_restore", logger=logger, on_start=on_start)
    return {
        "argv": [Path(argv[0]).name, *argv[1:-1], "<dir>"],
        "prepare_seconds": round(prepare_seconds, 3),
        "pg_restore_seconds": round(run.seconds, 3),
    }


def list_toc(dump_dir: Path, *, server_major: int | None = None) -> list[str]:
    """``pg_restore --list`` of a directory-format dump (reads toc.dat only)."""
    pg_restore = pg_tool("pg_restore", server_major)
    proc = subprocess.run(
        [pg_restore, "--list", str(dump_dir)], capture_output=True, text=True, check=False, timeout=300
    )
    if proc.returncode != 0:
        raise ToolError(f"pg_restore --list failed: {proc.stderr.strip()[-2000:]}")
    return [line for line in proc.stdout.splitlines() if line and not line.startswith(";")]


def missing_table_data(toc_lines: list[str], tables: list[tuple[str, str]]) -> list[str]:
    """``schema.table`` of the tables with no TABLE DATA entry in a ``pg_restore --list``.

    An entry reads ``3345; 0 16390 TABLE DATA public orders postgres``.
    """
    entries = {line.split(" TABLE DATA ", 1)[1] for line in toc_lines if " TABLE DATA " in line}
    missing = []
    for schema, name in tables:
        prefix = f"{schema} {name} "
        if not any(entry.startswith(prefix) for entry in entries):
            missing.append(f"{schema}.{name}")
    return missing

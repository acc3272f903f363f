"""Physical backups: ``pg_basebackup`` (tar format, WAL streamed) checked by ``pg_verifybackup``.

The backup holds ``base.tar[.gz|.zst]``, ``pg_wal.tar[...]`` and pg_basebackup's own
``backup_manifest``. PostgreSQL 15's pg_verifybackup reads plain directories only, so
verifying extracts the tars into a scratch directory first; a restore extracts the same
way and starts a temporary server on it (``TempServer``), which replays the streamed
WAL to the end of the backup.

Row counts and checksums of a physical backup cannot come from a snapshot of the live
server (the backup is consistent at its *end*, after writes the snapshot would miss or
include): they are read from the backup itself, booted in a temporary server, which is
exactly the state any restore of it gives. Additional tablespaces are not supported.
"""

from __future__ import annotations

import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opsdag.backups import stats as table_stats
from opsdag.backups.pg import PgTarget, ToolError, pg_tool, run_tool, server_info, tool_major
from opsdag.backups.pg_server import hand_over, server_user
from opsdag.backups.tempserver import TempServer

log = logging.getLogger(__name__)


ZSTD_WORKERS = 2  # compression threads in the server's walsender (PostgreSQL 15+, zstd only)


def compression_args(
    compression: str, level: int, workers: int = ZSTD_WORKERS
) -> tuple[list[str], dict[str, Any]]:
    """pg_basebackup's ``--compress`` and how the manifest describes it.

    zstd is compressed on the server by ``workers`` threads (``server-zstd:level=N,workers=W``):
    on a 2-core machine with a 1.1 GB cluster, 1.4-2.1 s at level 3, against 3.9-4.2 s for a
    pgBackRest full backup (zstd level 3, process-max 2) and 11.6 s for gzip, which has no
    workers (one stream, on the client or the server alike). Level 6 zstd took 6.3 s: choose
    ``compression_level`` 1-3 for physical backups.
    """
    if compression == "none":
        return ["--compress=none"], {"algorithm": "none", "level": None, "applied_by": "none"}
    if compression == "gzip":
        level = min(level, 9)
        return [f"--compress=client-gzip:{level}"], {
            "algorithm": "gzip",
            "level": level,
            "applied_by": "pg_basebackup",
            "where": "client",
        }
    if compression == "zstd":
        return [f"--compress=server-zstd:level={level},workers={workers}"], {
            "algorithm": "zstd",
            "level": level,
            "applied_by": "pg_basebackup",
            "where": "server",
            "workers": workers,
        }
    raise ValueError(f"unknown compression {compression!r}: use gzip, zstd or none")


def basebackup_argv(tool: str, out_dir: Path, compress: list[str], label: str) -> list[str]:
    return [
        tool,
        f"--pgdata={out_dir}",
        "--format=tar",
        "--wal-method=stream",
        "--checkpoint=fast",
        "--manifest-checksums=CRC32C",
        *compress,
        f"--label={label}",
        "--no-password",
    ]


def basebackup(
    source: PgTarget,
    out_dir: Path,
    *,
    compression: str,
    level: int,
    table_checksums: bool,
    scratch: Path,
    label: str = "opsdag",
    logger: logging.Logger | None = None,
    on_start: Any = None,
) -> dict[str, Any]:
    """Take a base backup of the cluster holding ``source`` into ``out_dir``; stats of ``source.dbname``."""
    logger = logger or log
    started = datetime.now(UTC)
    t0 = time.monotonic()
    with source.connect() as conn:
        server = server_info(conn)
        tablespaces = conn.execute(
            "SELECT count(*) FROM pg_tablespace WHERE spcname NOT LIKE 'pg\\_%'"
        ).fetchone()[0]
    if tablespaces:
        raise ToolError("physical backups of clusters with additional tablespaces are not supported")
    major = server["server_version_num"] // 10000
    tool = pg_tool("pg_basebackup", major)
    compress, described = compression_args(compression, level)
    argv = basebackup_argv(tool, out_dir, compress, label)
    logger.info("pg_basebackup of %s:%s: %s", source.host, source.port, " ".join(argv[1:]))
    with source.tool_env() as env:
        run = run_tool(argv, env=env, what="pg_basebackup", logger=logger, on_start=on_start)
    with source.connect() as conn:
        consistent_at = conn.execute("SELECT now()").fetchone()[0]
    # Per-table rows and checksums of a physical backup cost a boot of the backup in a temporary
    # server (minutes on a big cluster): taken only when asked. Without them the backup is still
    # proven by pg_basebackup's own manifest (pg_verifybackup) and the stored files' sha256, as
    # pgBackRest proves its backups; a drill then checks the spec's queries on the restored copy.
    t_stats = time.monotonic()
    tables = (
        stats_of_backup(out_dir, scratch, source.dbname, source.user, table_checksums, major, logger)
        if table_checksums
        else []
    )
    stats_seconds = time.monotonic() - t_stats
    return {
        "method": "physical",
        "dbname": source.dbname,
        "role": source.user,
        "started": started.isoformat(),
        "finished": datetime.now(UTC).isoformat(),
        "consistent_at": consistent_at.astimezone(UTC).isoformat(),
        "server_version": server["server_version"],
        "server_version_num": server["server_version_num"],
        "database_bytes": server["database_bytes"],
        "tool": {"name": "pg_basebackup", "major": tool_major(tool), "argv": [Path(tool).name, *argv[1:]]},
        "compression": described,
        "table_checksums": table_checksums,
        "tables": [t.to_dict() for t in tables],
        "timings": {
            "dump_seconds": round(run.seconds, 3),
            "stats_seconds": round(stats_seconds, 3),
            "total_seconds": round(time.monotonic() - t0, 3),
        },
    }


def _tar(name: str, backup_dir: Path) -> Path | None:
    for candidate in sorted(backup_dir.glob(f"{name}.tar*")):
        return candidate
    return None


def _untar_argv(archive: Path, into: Path) -> list[str]:
    """Extract one tar: zstd through ``zstd -dc |`` (its own process, so decompression and
    tar's writes use two cores), gzip and plain by tar itself."""
    tar = shutil.which("tar") or "tar"
    if archive.name.endswith(".zst"):
        zstd = shutil.which("zstd")
        if zstd is None:
            raise ToolError(f"{archive.name} is zstd-compressed: install the zstd command")
        script = 'set -o pipefail; "$1" -dc --no-progress -- "$2" | "$3" -xf - -C "$4"'
        return ["bash", "-c", script, "untar", zstd, str(archive), tar, str(into)]
    return [tar, "-xf", str(archive), "-C", str(into)]


def extract(backup_dir: Path, data_dir: Path, logger: logging.Logger | None = None) -> Path:
    """Unpack base and WAL tars (at the same time) and the manifest into ``data_dir``."""
    logger = logger or log
    base = _tar("base", backup_dir)
    if base is None:
        raise ToolError(f"{backup_dir} has no base.tar*: not a pg_basebackup tar-format backup")
    shutil.rmtree(data_dir, ignore_errors=True)
    (data_dir / "pg_wal").mkdir(parents=True)
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
    jobs = [(_untar_argv(base, data_dir), "tar (base)")]
    wal = _tar("pg_wal", backup_dir)
    if wal is not None:
        jobs.append((_untar_argv(wal, data_dir / "pg_wal"), "tar (pg_wal)"))
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        runs = [pool.submit(run_tool, argv, env=env, what=what, logger=logger) for argv, what in jobs]
        for run in runs:
            run.result()  # the first failure is raised
    if (backup_dir / "backup_manifest").exists():
        shutil.copy2(backup_dir / "backup_manifest", data_dir / "backup_manifest")
    return data_dir


def verify_backup(
    backup_dir: Path, scratch: Path, major: int | None, logger: logging.Logger | None = None
) -> str:
    """pg_verifybackup of an extracted copy; returns its report line, raises ToolError if bad."""
    data_dir = extract(backup_dir, scratch / "verify", logger)
    try:
        tool = pg_tool("pg_verifybackup", major)
        run = run_tool(
            [tool, str(data_dir)], env={"PATH": "/usr/bin:/bin"}, what="pg_verifybackup", logger=logger
        )
        return run.output[-1] if run.output else "backup successfully verified"
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def start_restored(
    backup_dir: Path, work: Path, major: int | None, logger: logging.Logger | None = None
) -> TempServer:
    """Extract ``backup_dir`` into ``work/data`` and start a temporary server on it."""
    data_dir = extract(backup_dir, work / "data", logger)
    (data_dir / "backup_manifest").unlink(missing_ok=True)
    for signal_file in ("standby.signal", "recovery.signal"):
        (data_dir / signal_file).unlink(missing_ok=True)
    hand_over(work, server_user())
    server = TempServer(data_dir, work / "run", major=major)
    return server.start()


def stats_of_backup(
    backup_dir: Path,
    scratch: Path,
    dbname: str,
    user: str,
    checksum: bool,
    major: int | None,
    logger: logging.Logger | None = None,
) -> list[table_stats.TableStats]:
    """Row counts and checksums read from the backup itself, booted in a temporary server."""
    work = scratch / "stats"
    server = start_restored(backup_dir, work, major, logger)
    try:
        with server.target(dbname, user).connect() as conn:
            table_stats.pin_session(conn)
            return table_stats.capture(conn, checksum=checksum)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

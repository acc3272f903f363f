"""Point-in-time recovery of a physical base backup with the archived WAL (the drill's I/O side).

``plan`` checks, before anything is restored, that the archive can take the chosen base
backup to the target: WAL continuous from the backup's start with every segment matching
its sha256 (``wal_archive.check_archive``), and the target inside the restorable range
(``pitr_plan``). ``start_recovered`` extracts the base backup, asks PostgreSQL for archive
recovery (``recovery.signal``; ``restore_command`` copies from the archive, whose
checksums were just verified; ``recovery_target_time``; promote at the target) and starts
a temporary server with ``hot_standby = off``, so the start returns only once recovery has
ended and the copy is promoted (or fails with PostgreSQL's own reason). The settings go
to the end of ``postgresql.auto.conf``, where they beat whatever the backed-up cluster had
set with ALTER SYSTEM.

The newest archived transaction comes from ``pg_waldump`` over the newest segments (its
``COMMIT <time>`` records), the last transaction the copy replayed from
``pg_last_xact_replay_timestamp()``: the RPO of the drill is the distance between them.
"""

from __future__ import annotations

import logging
import re
import shlex
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opsdag.backups import physical
from opsdag.backups.pg import pg_tool, qualified
from opsdag.backups.pg_server import PgServerError, hand_over, server_user
from opsdag.backups.pitr_plan import (
    RecoveryTarget,
    TargetRefused,
    check_in_range,
    choose_base,
    pitr_bases,
    restorable_range,
)
from opsdag.backups.tempserver import TempServer
from opsdag.backups.wal_archive import check_archive, list_archive
from opsdag.backups.wal_names import is_segment
from opsdag.backups.wal_push import archive_dir

log = logging.getLogger(__name__)

_COMMIT = re.compile(r"desc: COMMIT (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")
SCAN_SEGMENTS = 2  # the newest segments pg_waldump reads for the last commit


def last_commit(directory: Path, newest_segment: str, major: int | None) -> datetime | None:
    """The commit time of the newest transaction in the archive's newest segments (None if none)."""
    names = sorted(p.name for p in directory.iterdir() if len(p.name) == 24 and p.name <= newest_segment)
    tool = pg_tool("pg_waldump", major)
    for name in reversed(names[-SCAN_SEGMENTS:]):
        run = subprocess.run(
            [tool, "--path", str(directory), "--rmgr=Transaction", name],
            env={"PATH": "/usr/bin:/bin", "TZ": "UTC", "LC_ALL": "C"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,  # it exits 1 at the end of the WAL it was given: the records are what count
        )
        found = _COMMIT.findall(run.stdout)
        if found:
            return datetime.fromisoformat(found[-1]).replace(tzinfo=UTC)
    return None


def plan(
    store: Any, database: str, target: RecoveryTarget, *, requested: str | None, major: int | None = None
) -> dict[str, Any]:
    """Base backup, WAL continuity and range for ``target``; ``TargetRefused`` says why not."""
    if not store.is_local:
        raise TargetRefused("point-in-time recovery reads a local or mounted WAL archive")
    backups = store.list_backups(database)
    bases = pitr_bases(backups)
    root = store.local(store.root)
    directory = archive_dir(root, database)
    segments = [f.name for f in list_archive(directory) if is_segment(f.name)]
    newest_commit = last_commit(directory, segments[-1], major) if segments else None
    span = restorable_range(bases, newest_commit)
    if span is not None:
        check_in_range(target, span, database)
    base = choose_base(backups, target, database=database, requested=requested)
    continuity = check_archive(root, database, base.id)
    if not continuity.ok:
        raise TargetRefused(f"the WAL archive cannot take backup {base.id} forward: {continuity.reason}")
    assert continuity.newest_segment is not None and span is not None
    return {
        "base": base,
        "recovery": {
            "target": target.describe(),
            "archive": str(directory),
            "restorable_from": span.earliest.isoformat(),
            "restorable_to": newest_commit.isoformat() if newest_commit else None,
            "wal": {
                "start_segment": continuity.start_segment,
                "newest_segment": continuity.newest_segment,
                "segments": continuity.segments,
                "checksums": "every segment of the chain matches its sha256",
            },
        },
    }


def recovery_settings(archive: str, target: str) -> dict[str, str]:
    """The postgresql.conf lines of the recovery (``target``: an ISO time or ``latest``)."""
    settings = {
        "restore_command": f"cp {shlex.quote(archive)}/%f %p",
        "recovery_target_action": "promote",
        "recovery_target_timeline": "latest",
        "hot_standby": "off",
    }
    if target != "latest":
        moment = datetime.fromisoformat(target).astimezone(UTC)
        settings["recovery_target_time"] = moment.strftime("%Y-%m-%d %H:%M:%S.%f+00")
        settings["recovery_target_inclusive"] = "on"
    return settings


def _conf_line(name: str, value: str) -> str:
    return f"{name} = '{value.replace(chr(39), chr(39) * 2)}'\n"


def start_recovered(
    backup_dir: Path,
    work: Path,
    major: int | None,
    recovery: dict[str, Any],
    logger: logging.Logger | None = None,
    timeout: float = 1800.0,
) -> TempServer:
    """Extract ``backup_dir`` into ``work/data``, recover it to the target, start it promoted."""
    logger = logger or log
    data_dir = physical.extract(backup_dir, work / "data", logger)
    (data_dir / "backup_manifest").unlink(missing_ok=True)
    (data_dir / "standby.signal").unlink(missing_ok=True)
    (data_dir / "recovery.signal").write_text("")
    settings = recovery_settings(recovery["archive"], recovery["target"])
    with open(data_dir / "postgresql.auto.conf", "a") as conf:
        conf.write("# opsdag drill: point-in-time recovery\n")
        for name, value in settings.items():
            conf.write(_conf_line(name, value))
    logger.info(
        "recovering to %s from %s (WAL %s to %s)",
        recovery["target"],
        recovery["archive"],
        recovery["wal"]["start_segment"],
        recovery["wal"]["newest_segment"],
    )
    hand_over(work, server_user())
    server = TempServer(data_dir, work / "run", major=major).start(timeout=timeout)
    try:
        wait_promoted(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def wait_promoted(server: TempServer, timeout: float) -> None:
    """Until the copy accepts connections (recovery ended, promoted); its own error if it stopped.

    pg_ctl returns as soon as the recovering server is up; with hot_standby off it refuses
    connections until promoted, which ``pg_isready`` tells apart from being gone.
    """
    tool = pg_tool("pg_isready", server.major)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.running():
            raise PgServerError(f"the recovery stopped the server:\n{server.log_tail()}")
        ready = subprocess.run(
            [tool, "--quiet", "--host", str(server.socket_dir), "--port", str(server.port)],
            env={"PATH": "/usr/bin:/bin"},
            timeout=30,
            check=False,
        )
        if ready.returncode == 0:
            return
        time.sleep(0.2)
    raise PgServerError(f"recovery did not end within {timeout:.0f} s:\n{server.log_tail()}")


def recovered_facts(conn: Any) -> dict[str, Any]:
    """Where the promoted copy ended: its last replayed transaction, and that it left recovery."""
    last, in_recovery = conn.execute("SELECT pg_last_xact_replay_timestamp(), pg_is_in_recovery()").fetchone()
    return {
        "last_transaction_at": last.astimezone(UTC).isoformat() if last else None,
        "promoted": not in_recovery,
    }


def marker_counts(conn: Any, table: str, column: str, *, upto: datetime | None) -> dict[str, Any]:
    """Rows of the marker table (written up to ``upto`` if given) and the newest marker time."""
    schema, _, name = table.rpartition(".")
    source = qualified(schema or "public", name)
    col = '"' + column.replace('"', '""') + '"'
    where, args = (f" WHERE {col} <= %s", [upto]) if upto is not None else ("", [])
    rows, newest = conn.execute(f"SELECT count(*), max({col}) FROM {source}{where}", args).fetchone()
    return {"rows": int(rows), "newest": newest.astimezone(UTC).isoformat() if newest else None}


def rows_after(conn: Any, table: str, column: str, moment: datetime) -> int:
    schema, _, name = table.rpartition(".")
    col = '"' + column.replace('"', '""') + '"'
    sql = f"SELECT count(*) FROM {qualified(schema or 'public', name)} WHERE {col} > %s"
    return int(conn.execute(sql, [moment]).fetchone()[0])


def remove(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)

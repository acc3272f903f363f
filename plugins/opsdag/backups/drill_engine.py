"""The steps of a DR drill that change things: guard, provision, restore, teardown (no Airflow here).

Which backup is restored is ``drill_pick``'s decision; what proves the restored copy
usable (tables, checks, RTO and RPO) is ``drill_verification``'s.

Isolation and safety: a logical drill restores into a new scratch database on the drill
server (``drill.target_conn_id``), named ``opsdag_drill_<database>_<hash of the run>``
and marked by a comment ``opsdag drill <dag_id> <run_id>``; a physical drill extracts
into a scratch directory and starts a temporary server there. The drill refuses, before
anything changes, a target connection that is not marked ``{"opsdag_drill_target":
true}`` in its extra, or that is the source itself (same connection, or same server and
database). Teardown drops only a database carrying the drill's marker, and is safe to
run again when nothing is left.

Every name is derived from ``(dag_id, run_id)``, so each task (and a retried one) finds
the same database and directory without relying on another task's XCom.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opsdag.backups import logical, physical, pitr
from opsdag.backups.engine import scratch_dir
from opsdag.backups.manifest import Manifest
from opsdag.backups.pg import PgTarget, quote_ident
from opsdag.backups.storage import DATA_DIR, BackupStore
from opsdag.backups.tempserver import TempServer

log = logging.getLogger(__name__)

MARKER_PREFIX = "opsdag drill "
TARGET_FLAG = "opsdag_drill_target"
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "ip6-localhost"}


class DrillRefused(RuntimeError):
    """The drill would touch something it must not: nothing was changed."""


class DrillError(RuntimeError):
    """A drill step failed (restore, verification, objective): the message says which and why."""


class BackupCorrupt(DrillError):
    """The drill proved the backup does not hold what its manifest says: it is marked bad."""

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


# -- names ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DrillNames:
    scratch_db: str
    workdir: Path
    marker: str


def drill_names(dag_id: str, run_id: str, database: str) -> DrillNames:
    digest = hashlib.sha1(f"{dag_id}\n{run_id}".encode()).hexdigest()[:10]
    slug = re.sub(r"[^a-z0-9]+", "_", database.lower()).strip("_")[:30] or "db"
    return DrillNames(
        scratch_db=f"opsdag_drill_{slug}_{digest}",
        workdir=scratch_dir("drills") / f"{slug}-{digest}",
        marker=f"{MARKER_PREFIX}{dag_id} {run_id}",
    )


# -- guard ----------------------------------------------------------------------------


def _host_key(host: str) -> str:
    host = (host or "localhost").strip().lower()
    if host in _LOOPBACK or host.startswith("127.") or host.startswith("/"):
        return "loopback"
    return host


def check_target(
    *,
    source_conn_id: str,
    source: PgTarget,
    target_conn_id: str,
    target: PgTarget,
    target_extra: dict[str, Any],
    scratch_db: str,
) -> None:
    """Refuse (``DrillRefused``) any target that is not a marked drill target or is the source."""
    if target_conn_id == source_conn_id:
        raise DrillRefused(
            f"refused: the drill target {target_conn_id!r} is the source database's own connection"
        )
    if target_extra.get(TARGET_FLAG) is not True:
        raise DrillRefused(
            f"refused: connection {target_conn_id!r} is not marked as a drill target "
            f'(its extra must hold {{"{TARGET_FLAG}": true}})'
        )
    same_server = _host_key(target.host) == _host_key(source.host) and target.port == source.port
    if same_server and target.dbname == source.dbname:
        raise DrillRefused(
            f"refused: connection {target_conn_id!r} points at the source database {source.dbname!r} "
            f"on {source.host}:{source.port}"
        )
    if same_server and scratch_db == source.dbname:
        raise DrillRefused(f"refused: the scratch database name {scratch_db!r} is the source database")


# -- provision ------------------------------------------------------------------------


def _marker_of(conn: Any, dbname: str) -> tuple[bool, str | None]:
    row = conn.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (dbname,)
    ).fetchone()
    return (row is not None, row[0] if row else None)


def provision_database(
    target: PgTarget, names: DrillNames, logger: logging.Logger | None = None
) -> dict[str, Any]:
    """Create the empty scratch database (dropping a leftover of this same run first)."""
    logger = logger or log
    with target.connect() as conn:
        exists, marker = _marker_of(conn, names.scratch_db)
        if exists and marker != names.marker:
            raise DrillRefused(
                f"refused: database {names.scratch_db!r} exists on the drill server and is not this drill's"
            )
        if exists:
            logger.info("dropping %s left by an earlier attempt of this run", names.scratch_db)
            conn.execute(f"DROP DATABASE {quote_ident(names.scratch_db)} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {quote_ident(names.scratch_db)} TEMPLATE template0")
        try:
            literal = names.marker.replace("'", "''")
            conn.execute(f"COMMENT ON DATABASE {quote_ident(names.scratch_db)} IS '{literal}'")
        except BaseException:
            conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(names.scratch_db)} WITH (FORCE)")
            raise
    logger.info("created scratch database %s on %s:%s", names.scratch_db, target.host, target.port)
    return {"scratch_db": names.scratch_db, "server": f"{target.host}:{target.port}"}


# -- restore --------------------------------------------------------------------------


def check_files(store: BackupStore, manifest: Manifest, directory: Any) -> list[str]:
    """Files of the backup against the manifest (size and sha256): the problems found."""
    problems = []
    present = {f"{DATA_DIR}/{rel}": p for rel, p in store.files_under(directory / DATA_DIR).items()}
    for entry in manifest.files:
        path = present.get(entry.path)
        if path is None:
            problems.append(f"{entry.path}: missing")
            continue
        size, digest = store.hash_file(path)
        if size != entry.bytes or digest != entry.sha256:
            problems.append(
                f"{entry.path}: does not match the manifest ({size} bytes, sha256 {digest[:12]}...)"
            )
    return problems


def local_copy(store: BackupStore, database: str, backup_id: str, names: DrillNames) -> Path:
    """The backup's data directory on local disk (downloaded into the drill's workdir if remote)."""
    final = store.backup_dir(database, backup_id)
    if store.is_local:
        return store.local(final / DATA_DIR)
    target = names.workdir / "download"
    shutil.rmtree(target, ignore_errors=True)
    store.download_tree(final / DATA_DIR, target)
    return target


def restore(
    store: BackupStore,
    database: str,
    manifest: Manifest,
    names: DrillNames,
    *,
    target: PgTarget | None,
    jobs: int,
    check_checksums: bool = True,
    recovery: dict[str, Any] | None = None,
    logger: logging.Logger | None = None,
    on_start: Any = None,
) -> dict[str, Any]:
    """Restore ``manifest``'s backup: into the scratch database, or into a temporary server
    (recovered with the archived WAL to ``recovery["target"]`` when ``recovery`` is given, see ``pitr``)."""
    logger = logger or log
    t0 = time.monotonic()
    names.workdir.mkdir(parents=True, exist_ok=True)
    if check_checksums:
        problems = check_files(store, manifest, store.backup_dir(database, manifest.id))
        if problems:
            message = "the backup's files do not match its manifest: " + "; ".join(problems)
            raise BackupCorrupt(message, problems)
    data = local_copy(store, database, manifest.id, names)
    fetch_seconds = time.monotonic() - t0
    major = manifest.server_version_num // 10000
    if manifest.method == "logical":
        if target is None:
            raise DrillError("a logical restore needs the drill target connection")
        if not _is_empty(target.with_db(names.scratch_db)):  # a retried restore starts afresh
            logger.info(
                "scratch database %s is not empty (an earlier attempt): recreating it", names.scratch_db
            )
            provision_database(target, names, logger=logger)
        result = logical.restore(
            target.with_db(names.scratch_db),
            data,
            jobs=jobs,
            scratch=names.workdir,
            logger=logger,
            on_start=on_start,
        )
    else:
        server_dir = names.workdir / "server"
        TempServer.find(server_dir / "run", server_dir / "data").stop()  # an earlier attempt's
        t1 = time.monotonic()
        if recovery is not None:
            server = pitr.start_recovered(data, server_dir, major, recovery, logger)
        else:
            server = physical.start_restored(data, server_dir, major, logger)
        result = {"port": server.port, "start_seconds": round(time.monotonic() - t1, 3)}
        if recovery is not None:
            result["recovered_to"] = recovery["target"]
    result["fetch_seconds"] = round(fetch_seconds, 3)
    result["seconds"] = round(time.monotonic() - t0, 3)
    return result


def _is_empty(target: PgTarget) -> bool:
    with target.connect() as conn:
        return not conn.execute(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg\\_%' LIMIT 1"
        ).fetchone()


def restored_target(manifest: Manifest, names: DrillNames, target: PgTarget | None, role: str) -> PgTarget:
    """Where the restored copy can be queried."""
    if manifest.method == "logical":
        assert target is not None
        return target.with_db(names.scratch_db)
    server = TempServer.find(names.workdir / "server" / "run", names.workdir / "server" / "data")
    if not server.running():
        raise DrillError(f"the temporary server of this drill is not running ({names.workdir / 'server'})")
    return server.target(manifest.dbname, role)


# -- teardown -------------------------------------------------------------------------


def teardown(
    target: PgTarget | None, names: DrillNames, logger: logging.Logger | None = None
) -> dict[str, Any]:
    """Drop the scratch database (only if it carries this drill's marker), stop the temporary
    server, delete the workdir; then check that nothing is left. Safe to run again."""
    logger = logger or log
    actions: list[str] = []
    left: list[str] = []
    server_dir = names.workdir / "server"
    if (server_dir / "data").exists():
        server = TempServer.find(server_dir / "run", server_dir / "data")
        if server.running():
            server.stop()
            actions.append("stopped the temporary server")
        server.remove_socket_dir()
        if server.running():
            left.append(f"temporary server in {server_dir} still runs")
    if target is not None:
        with target.connect() as conn:
            exists, marker = _marker_of(conn, names.scratch_db)
            if exists and marker == names.marker:
                conn.execute(f"DROP DATABASE {quote_ident(names.scratch_db)} WITH (FORCE)")
                actions.append(f"dropped database {names.scratch_db}")
            elif exists:
                left.append(f"database {names.scratch_db} exists without this drill's marker: not dropped")
            if _marker_of(conn, names.scratch_db)[0] and not left:
                left.append(f"database {names.scratch_db} still exists")
    if names.workdir.exists():
        shutil.rmtree(names.workdir, ignore_errors=True)
        actions.append(f"removed {names.workdir}")
        if names.workdir.exists():
            left.append(f"{names.workdir} could not be removed")
    for action in actions:
        logger.info("teardown: %s", action)
    return {"actions": actions or ["nothing to remove"], "left_behind": left, "clean": not left}


def physical_role(manifest: Manifest, fallback: str) -> str:
    """The role that owns the restored cluster of a physical backup (it was taken as that role)."""
    return str(manifest.model_extra.get("role") or fallback) if manifest.model_extra else fallback

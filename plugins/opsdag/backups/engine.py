"""The steps of a backup, as plain functions the operators call (no Airflow import here).

The six steps of one backup in run order, sharing its ids and directories (the verify step's
work is in ``backup_verification``; what a failing storage said, in ``storage_errors``).

Every step is idempotent, keyed by ``(database, backup_id)``: the backup id is derived
from the DAG run (``backup_id_for``), so a retried task finds the same names. A retried
backup step throws away its own half-written partial directory and starts again; a
backup whose manifest is already published is left alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opsdag.backups import logical, physical
from opsdag.backups.manifest import Manifest, build_manifest
from opsdag.backups.pg import PgTarget, pg_tool, server_info, tool_major
from opsdag.backups.retention import RetentionPolicy, plan_retention
from opsdag.backups.storage import DATA_DIR, BackupStore
from opsdag.backups.storage_errors import storage_problem, storage_refused_message
from opsdag.format import size

log = logging.getLogger(__name__)

CAPTURE = "capture.json"


class BackupError(RuntimeError):
    """A backup step failed for a reason worth reporting as is (no traceback needed)."""


class StorageRefused(BackupError):
    """The storage was full or refused a write; the backup's files were removed (none is visible)."""


@dataclass(frozen=True)
class BackupOptions:
    method: str = "logical"
    jobs: int = 2
    compression: str = "gzip"
    level: int = 6
    table_checksums: bool = True
    timeout: float | None = None


def backup_id_for(run_after: datetime, run_id: str) -> str:
    """``20260101T020000Z-1a2b3c``: sortable by time, unique per DAG run, stable across retries."""
    stamp = run_after.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{hashlib.sha1(run_id.encode()).hexdigest()[:6]}"


def scratch_dir(kind: str, *parts: str) -> Path:
    """A local working directory under the state directory (``scratch/<kind>/...``)."""
    from opsdag import paths

    path = paths.state_dir().joinpath("scratch", kind, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- preflight ------------------------------------------------------------------------

ESTIMATE_RATIO = {"none": 1.0, "gzip": 0.5, "zstd": 0.5}


def preflight(source: PgTarget, store: BackupStore, database: str, options: BackupOptions) -> dict[str, Any]:
    """Server reachable, client tools able to dump it, room at the destination for the backup."""
    try:
        with source.connect() as conn:
            server = server_info(conn)
            if options.method == "physical":
                ok = conn.execute(
                    "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user"
                ).fetchone()[0]
                if not ok:
                    raise BackupError(f"{source.user} needs the REPLICATION privilege for a physical backup")
    except BackupError:
        raise
    except Exception as exc:
        raise BackupError(f"server {source.address} is not reachable: {str(exc).strip()}") from exc
    major = server["server_version_num"] // 10000
    tool_name = "pg_dump" if options.method == "logical" else "pg_basebackup"
    tool = pg_tool(tool_name, major)
    tool_ver = tool_major(tool)
    if tool_ver < major:
        raise BackupError(
            f"{tool} is version {tool_ver}, older than the server ({major}): install a newer client"
        )

    previous = store.newest_verified(database)
    if previous is not None and previous.manifest is not None:
        expected = int(previous.manifest.bytes * 1.2)
        basis = f"last verified backup {previous.id} ({previous.manifest.bytes} bytes) + 20 %"
    else:
        expected = int(server["database_bytes"] * ESTIMATE_RATIO.get(options.compression, 1.0))
        basis = f"database size x {ESTIMATE_RATIO.get(options.compression, 1.0)}"
    if options.method == "logical" and options.compression == "zstd" and tool_ver < 16:
        expected = max(expected, server["database_bytes"])  # dumped uncompressed first
        basis += " (uncompressed dump first: pg_dump < 16 has no zstd)"
    free = _free_bytes(store, database)
    result = {
        "server": f"{source.host}:{source.port}",
        "server_version": server["server_version"],
        "database_bytes": server["database_bytes"],
        "tool": f"{tool_name} {tool_ver}",
        "expected_bytes": expected,
        "expected_basis": basis,
        "free_bytes": free,
    }
    if free is not None and free < expected:
        raise BackupError(
            f"not enough space at {store.url}: {size(free)} free, about {size(expected)} needed ({basis})"
        )
    return result


def _free_bytes(store: BackupStore, database: str) -> int | None:
    """Free space where the dump is written: the store if local, else the local scratch area."""
    path = store.local(store.root) if store.is_local else scratch_dir("backups")
    path.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(path).free


# -- backup ---------------------------------------------------------------------------


def take_backup(
    source: PgTarget,
    store: BackupStore,
    database: str,
    backup_id: str,
    options: BackupOptions,
    *,
    run: dict[str, Any] | None = None,
    on_start: Callable[[Any], None] | None = None,
    logger: logging.Logger | None = None,
) -> dict[str, Any]:
    """Dump (or base-backup) ``source`` into the partial directory of ``backup_id``."""
    logger = logger or log
    published = store.read_manifest(database, backup_id)
    if published is not None:
        logger.info("backup %s of %s is already published: nothing to do", backup_id, database)
        return _summary(published.model_dump(mode="json", by_alias=True), skipped=True)
    partial = store.partial_dir(database, backup_id)
    store.remove_tree(partial)  # a previous attempt of this same run
    store.remove_tree(store.backup_dir(database, backup_id))  # published dir without manifest
    local_work = None if store.is_local else scratch_dir("backups", database, backup_id)
    writing_to = (store.url, False) if store.is_local else (str(local_work), False)  # (where, remote)
    try:
        if store.is_local:
            base = store.local(partial)
            base.mkdir(parents=True)
        else:
            assert local_work is not None
            shutil.rmtree(local_work, ignore_errors=True)
            base = local_work
            base.mkdir(parents=True)
        capture = _run_method(source, base / DATA_DIR, options, backup_id, logger, on_start)
        capture.update({"id": backup_id, "database": database, "run": run or {}})
        writing_to = (store.url, not store.is_local)
        if not store.is_local:
            store.upload_tree(base / DATA_DIR, partial / DATA_DIR)
        store.write_json(partial / CAPTURE, capture)
    except BaseException as exc:
        with contextlib.suppress(Exception):  # a refusing store may refuse the clean-up too
            store.remove_tree(partial)
        under = str(store.local(store.root)) if store.is_local else str(local_work)
        if problem := storage_problem(exc, remote=writing_to[1], under=under):
            what = f"backup {backup_id} of {database}"
            raise StorageRefused(storage_refused_message(what, writing_to[0], problem)) from exc
        raise
    finally:
        if local_work is not None:
            shutil.rmtree(local_work, ignore_errors=True)
    return _summary(capture, skipped=False)


def _run_method(
    source: PgTarget,
    out_dir: Path,
    options: BackupOptions,
    backup_id: str,
    logger: logging.Logger,
    on_start: Any,
) -> dict[str, Any]:
    if options.method == "logical":
        dump_options = logical.DumpOptions(
            options.jobs, options.compression, options.level, options.table_checksums, options.timeout
        )
        return logical.dump(source, out_dir, dump_options, on_start=on_start, logger=logger)
    if options.method == "physical":
        with tempfile.TemporaryDirectory(dir=scratch_dir("physical"), prefix=f"{backup_id}-") as scratch:
            return physical.basebackup(
                source,
                out_dir,
                compression=options.compression,
                level=options.level,
                table_checksums=options.table_checksums,
                scratch=Path(scratch),
                label=f"opsdag {backup_id}",
                logger=logger,
                on_start=on_start,
            )
    raise ValueError(f"unknown backup method {options.method!r}")


def _summary(capture: dict[str, Any], *, skipped: bool) -> dict[str, Any]:
    """The small XCom of the backup step."""
    return {
        "backup_id": capture["id"],
        "method": capture["method"],
        "database_bytes": capture.get("database_bytes"),
        "consistent_at": str(capture["consistent_at"]),
        "tables": len(capture.get("tables", [])),
        "timings": capture.get("timings", {}),
        "skipped": skipped,
    }


# -- manifest -------------------------------------------------------------------------


def publish_manifest(store: BackupStore, database: str, backup_id: str) -> Manifest:
    """Hash every file, write the manifest last: from then on the backup exists."""
    existing = store.read_manifest(database, backup_id)
    if existing is not None:
        return existing
    partial = store.partial_dir(database, backup_id)
    source_dir = partial if store.exists(partial) else store.backup_dir(database, backup_id)
    try:
        capture = json.loads((source_dir / CAPTURE).read_bytes())
    except FileNotFoundError as exc:
        raise BackupError(f"backup {backup_id} of {database} has no completed dump to publish") from exc
    files = []
    for rel, path in store.files_under(source_dir / DATA_DIR).items():
        size, digest = store.hash_file(path)
        files.append({"path": f"{DATA_DIR}/{rel}", "bytes": size, "sha256": digest})
    if not files:
        raise BackupError(f"backup {backup_id} of {database} has no data files")
    manifest = build_manifest(capture, files)
    try:
        store.publish(database, backup_id, manifest)
    except Exception as exc:  # the backup stays invisible (no manifest); a retry publishes it
        under = str(store.local(store.root)) if store.is_local else None
        if problem := storage_problem(exc, remote=not store.is_local, under=under):
            what = f"publishing backup {backup_id} of {database}"
            invisible = "the backup stays invisible (no manifest) until a retry publishes it"
            raise StorageRefused(storage_refused_message(what, store.url, problem, invisible)) from exc
        raise
    capture_path = store.backup_dir(database, backup_id) / CAPTURE
    if store.exists(capture_path):
        capture_path.unlink()
    return manifest


# -- verify ---------------------------------------------------------------------------


def verify(
    store: BackupStore, database: str, backup_id: str, logger: logging.Logger | None = None
) -> dict[str, Any]:
    """Re-read every file from storage against the manifest, then read the archive's contents.

    Writes ``verification.json`` (``verified`` or ``bad`` with the problems) and returns it
    (``backup_verification.verify_backup``).
    """
    from opsdag.backups.backup_verification import verify_backup

    return verify_backup(store, database, backup_id, logger or log)


# -- retention ------------------------------------------------------------------------


def apply_retention(
    store: BackupStore,
    database: str,
    policy: RetentionPolicy,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    logger: logging.Logger | None = None,
) -> dict[str, Any]:
    """Prune what the policy says (or, with ``dry_run``, only list it)."""
    logger = logger or log
    backups = store.list_backups(database)
    plan = plan_retention([b.record() for b in backups], policy, now or datetime.now(UTC))
    for line in plan.describe():
        logger.info("%s%s", "[dry run] " if dry_run else "", line)
    deleted = []
    if not dry_run:
        for backup_id in plan.delete:
            store.delete(database, backup_id)
            deleted.append(backup_id)
    return {"dry_run": dry_run, **plan.to_dict(), "deleted": deleted}

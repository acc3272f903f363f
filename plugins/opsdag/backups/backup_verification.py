"""The verify step of a backup: every stored file against the manifest, then the archive's contents.

Called as ``engine.verify`` (the steps of a backup are named there). Split from engine.py to
keep it readable; a local store is read in place, a remote one through a local scratch
copy of what the content check needs (``toc.dat`` of a dump, the whole base backup for
``pg_verifybackup``). No Airflow import.
"""

from __future__ import annotations

import logging
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opsdag.backups import logical, physical
from opsdag.backups.engine import BackupError, scratch_dir
from opsdag.backups.manifest import Manifest
from opsdag.backups.pg import ToolError
from opsdag.backups.storage import DATA_DIR, VERIFICATION, BackupStore


def verify_backup(
    store: BackupStore, database: str, backup_id: str, logger: logging.Logger
) -> dict[str, Any]:
    """Re-read every file from storage against the manifest, then read the archive's contents.

    Writes ``verification.json`` (``verified`` or ``bad`` with the problems) and returns it.
    """
    t0 = time.monotonic()
    manifest = store.read_manifest(database, backup_id)
    if manifest is None:
        raise BackupError(f"backup {backup_id} of {database} does not exist (no complete manifest)")
    final = store.backup_dir(database, backup_id)
    problems: list[str] = []
    present = {f"{DATA_DIR}/{rel}": path for rel, path in store.files_under(final / DATA_DIR).items()}
    for entry in manifest.files:
        path = present.get(entry.path)
        if path is None:
            problems.append(f"{entry.path}: missing")
            continue
        size, digest = store.hash_file(path)
        if size != entry.bytes:
            problems.append(f"{entry.path}: {size} bytes, manifest says {entry.bytes}")
        elif digest != entry.sha256:
            problems.append(f"{entry.path}: sha256 differs from the manifest")
    for extra in sorted(set(present) - set(manifest.data_files())):
        problems.append(f"{extra}: not in the manifest")
    checksum_seconds = time.monotonic() - t0
    contents = ""
    if not problems:
        try:
            contents = _check_contents(store, manifest, final, logger)
        except (ToolError, BackupError) as exc:
            problems.append(str(exc))
    result = {
        "status": "bad" if problems else "verified",
        "backup_id": backup_id,
        "checked_at": datetime.now(UTC).isoformat(),
        "files": len(manifest.files),
        "bytes": manifest.bytes,
        "contents": contents,
        "problems": problems,
        "timings": {
            "checksum_seconds": round(checksum_seconds, 3),
            "total_seconds": round(time.monotonic() - t0, 3),
        },
    }
    store.write_json(final / VERIFICATION, result)
    for problem in problems:
        logger.error("backup %s of %s: %s", backup_id, database, problem)
    return result


def _check_contents(store: BackupStore, manifest: Manifest, final: Any, logger: logging.Logger) -> str:
    major = manifest.server_version_num // 10000
    with tempfile.TemporaryDirectory(dir=scratch_dir("verify")) as tmp:
        scratch = Path(tmp)
        if manifest.method == "logical":
            if store.is_local:
                dump_dir = store.local(final / DATA_DIR)
            else:
                dump_dir = scratch / "toc"
                store.download_tree(final / DATA_DIR, dump_dir, only=["toc.dat"])
            lines = logical.list_toc(dump_dir, server_major=major)
            missing = logical.missing_table_data(lines, [(t.schema_, t.name) for t in manifest.tables])
            if missing:
                raise BackupError(f"pg_restore --list: no TABLE DATA for {', '.join(missing)}")
            return f"pg_restore --list: {len(lines)} entries, data of all {len(manifest.tables)} tables"
        if store.is_local:
            backup_dir = store.local(final / DATA_DIR)
        else:
            backup_dir = scratch / "download"
            store.download_tree(final / DATA_DIR, backup_dir)
        return "pg_verifybackup: " + physical.verify_backup(backup_dir, scratch, major, logger)

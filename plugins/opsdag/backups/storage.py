"""Where backups live: a local directory, S3 or GCS, through Airflow's ObjectStoragePath.

Layout under the backup root (``storage`` of the spec, default ``opsdag.paths.backups_root()``)::

    <database>/.partial-<backup_id>/     a backup being written (invisible)
    <database>/<backup_id>/data/...      the backup's files (pg_dump directory, or tars)
    <database>/<backup_id>/manifest.json written last: the backup exists from then on
    <database>/<backup_id>/verification.json   result of the last verification

Publishing renames the partial directory to its final name (atomic on a local file
system; a move of each object on S3/GCS, where the manifest, written after it, is what
makes the backup visible) and then writes the manifest. Deleting removes the manifest
first, so a half-deleted backup is invisible too. Local paths are used directly by
pg_dump and pg_restore; remote ones go through a local scratch directory.

S3 and GCS need the Amazon / Google provider (which register those schemes with
ObjectStoragePath) and a connection (``storage_conn_id``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opsdag.backups.manifest import Manifest
from opsdag.backups.retention import BackupRecord, State

PARTIAL_PREFIX = ".partial-"
DELETING_PREFIX = ".deleting-"
MANIFEST = "manifest.json"
VERIFICATION = "verification.json"
DATA_DIR = "data"
_ID = re.compile(r"^(\d{8}T\d{6}Z)(?:-[0-9a-z]+)?$")
_CHUNK = 1 << 20


def backup_id_time(backup_id: str) -> datetime | None:
    match = _ID.match(backup_id)
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def is_backup_id(name: str) -> bool:
    return bool(_ID.match(name))


@dataclass
class StoredBackup:
    id: str
    state: State
    time: datetime
    manifest: Manifest | None = None
    verification: dict[str, Any] | None = None

    def record(self) -> BackupRecord:
        return BackupRecord(self.id, self.time, self.state)


def sha256_of(stream: Any) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


class BackupStore:
    """Backups of many databases under one root URL."""

    def __init__(self, url: str | os.PathLike[str] | None = None, conn_id: str | None = None) -> None:
        from airflow.sdk import ObjectStoragePath

        if url is None:
            from opsdag import paths

            url = paths.backups_root()
        text = str(url)
        if text.startswith("/"):
            Path(text).mkdir(parents=True, exist_ok=True)
            text = "file://" + text
        self.url = text
        self.conn_id = conn_id
        self.root = ObjectStoragePath(text, conn_id=conn_id)

    def __repr__(self) -> str:
        return f"BackupStore({self.url!r})"

    # -- paths ----------------------------------------------------------------------

    @property
    def is_local(self) -> bool:
        return self.root.protocol in ("file", "local", "")

    def local(self, path: Any) -> Path:
        """The local file system path behind ``path`` (only for a local store)."""
        if not self.is_local:
            raise ValueError(f"{self.url} is not a local store")
        return Path(path.path)

    def database_dir(self, database: str) -> Any:
        return self.root / database

    def backup_dir(self, database: str, backup_id: str) -> Any:
        return self.root / database / backup_id

    def partial_dir(self, database: str, backup_id: str) -> Any:
        return self.root / database / f"{PARTIAL_PREFIX}{backup_id}"

    def location(self, database: str, backup_id: str) -> str:
        return f"{self.url.rstrip('/')}/{database}/{backup_id}"

    # -- listing and reading ----------------------------------------------------------

    def refresh(self, directory: Any) -> None:
        """Forget cached listings below ``directory`` (s3fs caches them; other processes write too)."""
        if not self.is_local:
            directory.fs.invalidate_cache(directory.path)

    def _names(self, directory: Any) -> list[str]:
        self.refresh(directory)
        try:
            return sorted(p.name for p in directory.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def exists(self, path: Any) -> bool:
        try:
            return path.exists()
        except FileNotFoundError:
            return False

    def read_manifest(self, database: str, backup_id: str) -> Manifest | None:
        """The manifest of a published backup, or None when the backup does not exist."""
        path = self.backup_dir(database, backup_id) / MANIFEST
        try:
            return Manifest.from_json(path.read_bytes())
        except FileNotFoundError:
            return None

    def read_verification(self, database: str, backup_id: str) -> dict[str, Any] | None:
        path = self.backup_dir(database, backup_id) / VERIFICATION
        try:
            return json.loads(path.read_bytes())
        except (FileNotFoundError, ValueError):
            return None

    def mark_bad(self, database: str, backup_id: str, problems: list[str], found_by: str) -> dict[str, Any]:
        """Record that ``backup_id`` was proved corrupt (by a drill): from now on retention does not
        count it as a good backup and no drill picks it. The earlier verification is kept inside."""
        result = {
            "status": "bad",
            "backup_id": backup_id,
            "checked_at": datetime.now(UTC).isoformat(),
            "found_by": found_by,
            "problems": list(problems),
            "previous": self.read_verification(database, backup_id),
        }
        self.write_json(self.backup_dir(database, backup_id) / VERIFICATION, result)
        return result

    def list_backups(self, database: str) -> list[StoredBackup]:
        """Every backup of ``database`` (published or in progress), oldest first.

        A directory with an unreadable or incomplete manifest is treated like one in
        progress: it does not exist as a backup, and retention removes it once abandoned.
        """
        out: list[StoredBackup] = []
        now = datetime.now(UTC)
        for name in self._names(self.database_dir(database)):
            if name.startswith(PARTIAL_PREFIX):
                backup_id = name[len(PARTIAL_PREFIX) :]
                if is_backup_id(backup_id):
                    out.append(StoredBackup(backup_id, "partial", backup_id_time(backup_id) or now))
                continue
            if not is_backup_id(name):
                continue
            try:
                manifest = self.read_manifest(database, name)
            except ValueError:
                manifest = None
            if manifest is None:
                out.append(StoredBackup(name, "partial", backup_id_time(name) or now))
                continue
            verification = self.read_verification(database, name)
            status = (verification or {}).get("status")
            state: State = "verified" if status == "verified" else "bad" if status == "bad" else "unverified"
            out.append(StoredBackup(name, state, manifest.consistent_at, manifest, verification))
        return sorted(out, key=lambda b: (b.time, b.id))

    def newest_verified(self, database: str) -> StoredBackup | None:
        verified = [b for b in self.list_backups(database) if b.state == "verified"]
        return verified[-1] if verified else None

    def files_under(self, directory: Any) -> dict[str, Any]:
        """``{relative path: path}`` of every file below ``directory``."""
        if self.is_local:
            base = self.local(directory)
            if not base.is_dir():
                return {}
            return {
                str(p.relative_to(base)): directory / str(p.relative_to(base))
                for p in sorted(base.rglob("*"))
                if p.is_file()
            }
        base = directory.path.rstrip("/")
        self.refresh(directory)
        found = {}
        for path in directory.fs.find(base):
            rel = path[len(base) :].lstrip("/")
            found[rel] = directory / rel
        return found

    def hash_file(self, path: Any) -> tuple[int, str]:
        with path.open("rb") as fh:
            return sha256_of(fh)

    # -- writing --------------------------------------------------------------------

    def write_json(self, path: Any, data: Any) -> None:
        """Write a small JSON document so that readers see the old one or the new one."""
        text = data if isinstance(data, str) else json.dumps(data, indent=2, default=str) + "\n"
        if self.is_local:
            target = self.local(path)
            tmp = target.with_name(f".{target.name}.tmp")
            try:
                tmp.write_text(text)
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            except BaseException:
                tmp.unlink(missing_ok=True)  # a full disk leaves no half-written document behind
                raise
        else:
            path.write_text(text)  # one PUT: object stores never show half an object

    def upload_tree(self, local_dir: Path, destination: Any) -> None:
        for file in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            rel = file.relative_to(local_dir).as_posix()
            target = destination / rel
            with open(file, "rb") as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)

    def download_tree(self, source: Any, local_dir: Path, only: Iterable[str] | None = None) -> list[str]:
        """Copy files below ``source`` to ``local_dir`` (all, or the relative paths in ``only``)."""
        files = self.files_under(source)
        wanted = set(only) if only is not None else set(files)
        for rel in sorted(wanted & set(files)):
            target = local_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with files[rel].open("rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
        return sorted(wanted & set(files))

    def remove_tree(self, path: Any) -> None:
        if self.is_local:
            shutil.rmtree(self.local(path), ignore_errors=True)
            return
        if self.exists(path):
            path.fs.rm(path.path, recursive=True)

    def publish(self, database: str, backup_id: str, manifest: Manifest) -> str:
        """Make a backup visible: partial directory -> final name, then the manifest, last."""
        partial = self.partial_dir(database, backup_id)
        final = self.backup_dir(database, backup_id)
        if self.exists(partial):
            if self.exists(final):  # a stale final dir without manifest from an earlier attempt
                self.remove_tree(final)
            if self.is_local:
                os.replace(self.local(partial), self.local(final))
            else:
                self._move_objects(partial, final)
        self.write_json(final / MANIFEST, manifest.to_json())
        return self.location(database, backup_id)

    def _move_objects(self, source: Any, destination: Any) -> None:
        """Object by object (server-side copies, then the deletes): object stores have no rename.
        Explicit rather than ``fs.mv(recursive=True)``, whose placement of a prefix varies."""
        files = self.files_under(source)
        for rel, path in sorted(files.items()):
            path.fs.copy(path.path, (destination / rel).path)
        self.remove_tree(source)

    def delete(self, database: str, backup_id: str) -> None:
        """Remove a backup: its manifest first (it stops existing), then its files."""
        final = self.backup_dir(database, backup_id)
        manifest = final / MANIFEST
        if self.exists(manifest):
            manifest.unlink()
        if self.is_local and self.exists(final):
            doomed = self.local(final).with_name(f"{DELETING_PREFIX}{backup_id}")
            os.replace(self.local(final), doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        else:
            self.remove_tree(final)
        self.remove_tree(self.partial_dir(database, backup_id))

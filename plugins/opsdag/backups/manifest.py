"""The backup manifest: what a backup holds and how to check it (the DESIGN.md contract).

``<backup root>/<database>/<backup_id>/manifest.json`` is written last, when every file
of the backup is in place: a backup without a complete manifest does not exist. Example::

    {
      "format": "opsdag-backup/1",
      "id": "20260101T020000Z-1a2b3c", "database": "demo-db", "dbname": "demo",
      "method": "logical",
      "started": "...", "finished": "...", "consistent_at": "...",
      "server_version": "15.10", "server_version_num": 150010,
      "tool": {"name": "pg_dump", "version": "15.10", "argv": ["pg_dump", "--format=directory", ...]},
      "compression": {"algorithm": "gzip", "level": 6, "applied_by": "pg_dump"},
      "snapshot": "00000003-0000001B-1",
      "database_bytes": 1105000000, "bytes": 19200000,
      "files": [{"path": "data/toc.dat", "bytes": 1234, "sha256": "..."}, ...],
      "table_checksums": true,
      "tables": [{"schema": "public", "name": "orders", "rows": 42,
                  "checksum": "9f86d0...", "method": "copy-sha256-v1", "columns": [...]}, ...],
      "run": {"dag_id": "backup__demo-db", "run_id": "..."},
      "complete": true
    }

``compression.applied_by`` says who compressed the data files: ``pg_dump`` (gzip, or
zstd with pg_dump 16+), ``opsdag`` (zstd applied per file with the zstd CLI after a
PostgreSQL 15 dump; restore decompresses first) or ``pg_basebackup``.

A table's ``method`` says how the drill recomputes its checksum (``stats``): ``copy-sha256-v1``
(logical backups: the sha256 of its COPY text, read from pg_dump's own files as they are
written), ``record-hash-v1``/``text-hash-v1`` (physical backups with ``table_checksums``, and
logical backups written before copy-sha256-v1; still verified). Physical backups without
``table_checksums`` have no ``tables``: pg_verifybackup and the files' sha256 prove them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from opsdag.backups.stats import TableStats

FORMAT = "opsdag-backup/1"


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Compression(BaseModel):
    model_config = ConfigDict(extra="allow")

    algorithm: Literal["gzip", "zstd", "none"]
    level: int | None = None
    applied_by: Literal["pg_dump", "opsdag", "pg_basebackup", "none"]


class TableEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    schema_: str = Field(alias="schema")
    name: str
    rows: int = Field(ge=0)
    checksum: str | None = None
    method: str | None = None

    def stats(self) -> TableStats:
        return TableStats(self.schema_, self.name, self.rows, self.checksum, self.method)


class Manifest(BaseModel):
    """A complete manifest; unknown keys written by a later version are kept, not refused."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    format: str = FORMAT
    id: str
    database: str
    dbname: str
    method: Literal["logical", "physical"]
    started: datetime
    finished: datetime
    consistent_at: datetime
    server_version: str
    server_version_num: int
    tool: dict[str, Any]
    compression: Compression
    database_bytes: int | None = None
    bytes: int
    files: list[FileEntry] = Field(min_length=1)
    table_checksums: bool
    tables: list[TableEntry]
    snapshot: str | None = None
    run: dict[str, Any] = Field(default_factory=dict)
    complete: Literal[True]

    def table_stats(self) -> list[TableStats]:
        return [t.stats() for t in self.tables]

    def data_files(self) -> dict[str, FileEntry]:
        return {f.path: f for f in self.files}

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, by_alias=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        return cls.model_validate_json(text)


def build_manifest(capture: dict[str, Any], files: list[dict[str, Any]]) -> Manifest:
    """Manifest from what the backup step recorded (``capture``) and the hashed files."""
    data = dict(capture)
    data["format"] = FORMAT
    data["files"] = sorted(files, key=lambda f: f["path"])
    data["bytes"] = sum(int(f["bytes"]) for f in files)
    data["complete"] = True
    return Manifest.model_validate(data)

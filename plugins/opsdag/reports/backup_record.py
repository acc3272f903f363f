"""The backup record: what a backup run did, as one pydantic model (``opsdag.backup-report/1``).

The backup DAG's report task builds it from its tasks' XComs
(``backup_report.build_backup_report``); the Markdown, the JSON file, the run's note and
the Slack message are all made from it, so they say the same. A failed run's record
names the first failing step and its own error.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from opsdag.reports.store import report_format

BACKUP_REPORT_FORMAT = report_format("backup", 1)

BackupResult = Literal["verified", "failed"]


class BackupStep(BaseModel):
    """One task of the backup run: its state and its own error."""

    name: str
    status: str
    error: str | None = None


class BackupVerification(BaseModel):
    """The ``verify`` task's result: files re-read against the manifest, the archive's contents."""

    model_config = ConfigDict(extra="allow")

    status: str | None = None
    contents: str = ""
    problems: list[str] = Field(default_factory=list)
    files: int | None = None
    checked_at: str | None = None


class RetentionDecisions(BaseModel):
    """What retention kept and why, what it deleted (or, in a dry run, would delete) and why.

    ``wal``: the archived WAL's retention (``wal_retention``), when the database archives WAL.
    """

    dry_run: bool = False
    keep: dict[str, list[str]] = Field(default_factory=dict)
    delete: dict[str, str] = Field(default_factory=dict)
    deleted: list[str] = Field(default_factory=list)
    wal: dict[str, Any] | None = None


class WalArchiveStatus(BaseModel):
    """The ``wal_continuity`` task's verdict: the archive's chain from the base backup, and the RPO.

    ``newest_at`` is the time of the newest segment of the unbroken chain: the latest point
    a point-in-time recovery reaches; ``rpo_seconds`` is how long before the check that was.
    """

    model_config = ConfigDict(extra="allow")

    status: str | None = None
    reason: str = ""
    start_segment: str | None = None
    end_segment: str | None = None
    newest_segment: str | None = None
    newest_at: str | None = None
    segments: int | None = None
    first_missing: str | None = None
    corrupt: list[str] = Field(default_factory=list)
    rpo_seconds: float | None = None


class BackupReport(BaseModel):
    """A backup run's record; its JSON starts with ``"format": "opsdag.backup-report/1"``.

    Sizes are bytes, durations seconds, throughput bytes per second; ``None`` is no data.
    """

    format: Literal["opsdag.backup-report/1"] = BACKUP_REPORT_FORMAT
    dag_id: str
    run_id: str
    database: str
    result: BackupResult
    started_at: str | None = None
    finished_at: str | None = None
    backup_id: str | None = None
    method: str | None = None
    server: str | None = None
    server_version: str | None = None
    consistent_at: str | None = None
    location: str | None = None
    database_bytes: int | None = None
    stored_bytes: int | None = None
    files: int | None = None
    tables: int | None = None
    backup_seconds: float | None = None
    dump_seconds: float | None = None
    stats_seconds: float | None = None
    verify_seconds: float | None = None
    throughput_bytes_per_s: float | None = None
    verification: BackupVerification | None = None
    retention: RetentionDecisions | None = None
    wal: WalArchiveStatus | None = None
    published: bool = False
    steps: list[BackupStep] = Field(default_factory=list)
    failed_task: str | None = None
    error: str | None = None
    problems: list[str] = Field(default_factory=list)
    summary: str = ""

    @property
    def ok(self) -> bool:
        return self.result == "verified"

    @property
    def pruned(self) -> int:
        """Old backups deleted by this run's retention (none in a dry run)."""
        return len(self.retention.deleted) if self.retention else 0

    def to_json(self) -> dict[str, Any]:
        """The JSON file's content (``format`` first)."""
        return self.model_dump(mode="json")

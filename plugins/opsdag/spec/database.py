"""The database spec: how a database is backed up, kept, and proven restorable."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from opsdag.spec.common import DnsName, Duration, StrictModel

_PRESETS = {"@once", "@hourly", "@daily", "@weekly", "@monthly", "@yearly"}


def check_schedule(value: str) -> str:
    """A cron expression of five fields or an Airflow preset like ``@daily``."""
    if value in _PRESETS:
        return value
    from croniter import croniter  # Airflow's own cron dependency; imported only when needed

    if len(value.split()) != 5 or not croniter.is_valid(value):
        raise ValueError(
            f"{value!r} is not a schedule: use five cron fields like '0 2 * * *' "
            f"or one of {', '.join(sorted(_PRESETS))}"
        )
    return value


class WalArchive(StrictModel):
    """Continuous WAL archiving: the server's ``archive_command`` is ``python -m opsdag wal push``.

    With physical base backups it makes point-in-time recovery possible, to within
    ``archive_timeout`` of now (the server switches to a new segment at least that often when
    there were writes). The backup DAG checks the archive's continuity and reports its RPO.
    """

    enabled: bool = False
    archive_timeout: Duration = Field(
        default=timedelta(seconds=60), description="postgresql.conf's archive_timeout: the longest RPO"
    )

    @field_validator("archive_timeout")
    @classmethod
    def _whole_seconds(cls, value: timedelta) -> timedelta:
        seconds = value.total_seconds()
        if seconds < 1 or seconds != int(seconds):
            raise ValueError(
                f"{seconds:g} s is not an archive_timeout: PostgreSQL takes whole seconds, 1s or more"
            )
        return value


class Backup(StrictModel):
    """``logical``: pg_dump directory format; ``physical``: pg_basebackup + pg_verifybackup."""

    method: Literal["logical", "physical"] = "logical"
    schedule: str
    jobs: int = Field(default=2, ge=1, le=32, description="parallel pg_dump jobs")
    compression: Literal["zstd", "gzip", "none"] = Field(
        default="gzip",
        description=(
            "logical: gzip by pg_dump (fastest with PostgreSQL 15); zstd by pg_dump 16+, else by the "
            "zstd CLI after the dump. physical: choose zstd (level 1-3): compressed on the server by "
            "2 worker threads, about 5x faster than gzip, which is one stream"
        ),
    )
    compression_level: int = Field(default=6, ge=1, le=19, description="1-9 for gzip, 1-19 for zstd")
    table_checksums: bool = Field(
        default=True,
        description=(
            "logical: checksum every table as pg_dump writes it (row counts are always taken); "
            "physical: rows and checksums of every table, read by booting the backup in a temporary "
            "server (off: pg_verifybackup and the files' sha256 prove it)"
        ),
    )
    storage: str | None = Field(
        default=None, description="file path or s3://, gs:// URL; default: the state directory"
    )
    storage_conn_id: str | None = None
    timeout: Duration | None = Field(default=None, description="longest a dump may take")
    wal_archive: WalArchive = Field(
        default_factory=WalArchive, description="continuous WAL archiving (physical base backups only)"
    )

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        return check_schedule(value)

    @field_validator("compression_level")
    @classmethod
    def _level(cls, value: int, info: ValidationInfo) -> int:
        if info.data.get("compression") == "gzip" and value > 9:
            raise ValueError(f"{value} is not a gzip level: use 1 to 9 (zstd takes up to 19)")
        return value

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, value: str | None) -> str | None:
        if value is None or value.startswith("/") or value.split("://", 1)[0] in {"file", "s3", "gs", "gcs"}:
            return value
        raise ValueError(f"{value!r} must be an absolute path or a file://, s3:// or gs:// URL")

    @field_validator("wal_archive")
    @classmethod
    def _wal_archive_fits(cls, value: WalArchive, info: ValidationInfo) -> WalArchive:
        """Archived WAL replays onto a pg_basebackup copy only, and is written by the database host."""
        if not value.enabled:
            return value
        method = info.data.get("method")
        if method is not None and method != "physical":
            raise ValueError(
                f"WAL archiving needs method: physical (the method is {method!r}): archived WAL replays "
                "onto a pg_basebackup copy, never onto a pg_dump; switch the method or set enabled: false"
            )
        storage = info.data.get("storage")
        if storage and "://" in storage and not storage.startswith("file://"):
            raise ValueError(
                f"WAL archiving writes to a local or mounted directory, not {storage!r}: "
                "the server's archive_command stores each segment there"
            )
        return value


class Retention(StrictModel):
    """Keep the newest ``keep_last``, plus the newest backup of each of the last N days/weeks/months."""

    keep_last: int = Field(default=3, ge=1)
    daily: int = Field(default=7, ge=0)
    weekly: int = Field(default=4, ge=0)
    monthly: int = Field(default=6, ge=0)


class DrillCheck(StrictModel):
    """A query run on the restored copy and the single value it must return."""

    name: str
    sql: str
    expect: str | int | float | bool


class PitrMarker(StrictModel):
    """A table the application (or the sandbox) writes a row to every few seconds, with the time.

    A point-in-time drill compares it with the live database: the copy must hold exactly
    the rows written up to the recovery target, none after it."""

    table: str = Field(pattern=r"^([a-z_][a-z0-9_]*\.)?[a-z_][a-z0-9_]*$", description="[schema.]table")
    time_column: str = Field(default="written_at", pattern=r"^[a-z_][a-z0-9_]*$")


class Drill(StrictModel):
    schedule: str | None = None
    on_new_backup: bool = Field(default=True, description="also run when a new backup is published")
    target_conn_id: str = Field(
        description="server the drill restores onto; must be marked as a drill target"
    )
    jobs: int | None = Field(
        default=None, ge=1, le=32, description="parallel pg_restore jobs (default: backup.jobs)"
    )
    checks: list[DrillCheck] = Field(default_factory=list)
    pitr_marker: PitrMarker | None = Field(
        default=None, description="marker table proving a point-in-time restore exact (WAL archiving)"
    )

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        return None if value is None else check_schedule(value)


class Objectives(StrictModel):
    rto: Duration = Field(description="longest acceptable time to a verified, queryable copy")
    rpo: Duration = Field(description="oldest acceptable backup at the start of a drill")


class DatabaseNotifications(StrictModel):
    """Where backup and drill results go. Failures are always sent; successes unless ``on_success: false``."""

    slack_conn_id: str | None = Field(
        default=None, description="Slack webhook connection; default: slack_default when it exists"
    )
    on_success: bool = True


class DatabaseSpec(StrictModel):
    """One PostgreSQL database (include/databases/<name>.yaml)."""

    name: DnsName
    description: str = ""
    owners: list[str] = Field(default_factory=list)
    connection_id: str
    database: str | None = Field(default=None, description="database name if not the connection's schema")
    backup: Backup
    retention: Retention = Field(default_factory=Retention)
    drill: Drill | None = None
    objectives: Objectives
    notifications: DatabaseNotifications = Field(default_factory=DatabaseNotifications)

    @field_validator("drill")
    @classmethod
    def _drill_target(cls, value: Drill | None, info: ValidationInfo) -> Drill | None:
        if value is not None and value.target_conn_id == info.data.get("connection_id"):
            raise ValueError(
                f"target_conn_id {value.target_conn_id!r} is the database's own connection: "
                "a drill restores onto a separate drill target"
            )
        backup = info.data.get("backup")
        marker = value is not None and value.pitr_marker is not None
        if marker and backup is not None and not backup.wal_archive.enabled:
            raise ValueError(
                "pitr_marker proves point-in-time restores, which need backup.wal_archive.enabled: "
                "true (and method: physical); enable archiving or remove pitr_marker"
            )
        return value

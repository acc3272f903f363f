"""The drill record: what a DR drill run did, as one pydantic model (``opsdag.drill-report/2``).

The drill's report task builds it from the XComs of its tasks
(``drill_report.build_drill_report``); the Markdown, the JSON file, the run's note and the
Slack message are all made from it. Sub-records keep any further keys their task
recorded (timings, for example), so the JSON loses nothing a task said.

Version 1 of the file (``"kind": "opsdag-drill-report/1"``, written before the reports
shared one header) is still read for the RTO trend: ``drill_history`` returns both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from opsdag.reports.store import load_reports, report_format

DRILL_REPORT_FORMAT = report_format("drill", 2)
DRILL_FORMAT_PREFIX = "opsdag.drill-report/"
LEGACY_DRILL_REPORT_KIND = "opsdag-drill-report/1"

DrillResult = Literal["passed", "failed", "refused"]


class _Recorded(BaseModel):
    """A task's XCom as recorded: the named fields typed, any others kept as they are."""

    model_config = ConfigDict(extra="allow")


class DrillBackupUsed(_Recorded):
    """The backup the drill restored (the ``pick_backup`` task's XCom) and why that one."""

    backup_id: str
    method: str | None = None
    consistent_at: str | None = None
    bytes: int | None = None
    tables: int | None = None
    server_version: str | None = None
    location: str | None = None
    drill_started: str | None = None
    chosen_because: str | None = None


class DrillTarget(_Recorded):
    """Where the copy was restored: a scratch database on a server, or a directory (``provision``)."""

    scratch_db: str | None = None
    workdir: str | None = None
    server: str | None = None


class DrillPhase(BaseModel):
    """One step of the drill: its state, when and how long, and its own error."""

    name: str
    status: str
    started_at: str | None = None
    finished_at: str | None = None
    seconds: float | None = None
    error: str | None = None


class RestoredTable(_Recorded):
    """One table of the restored copy against the manifest."""

    table: str
    expected_rows: int | None = None
    actual_rows: int | None = None
    expected_checksum: str | None = None
    actual_checksum: str | None = None
    ok: bool
    problem: str = ""


class DrillCheckResult(_Recorded):
    """One of the spec's checks run on the restored copy."""

    name: str
    sql: str = ""
    expect: Any = None
    got: Any = None
    ok: bool
    problem: str = ""


class DrillVerification(_Recorded):
    """Tables and checks of the restored copy (the ``verify`` task's result)."""

    ok: bool = False
    tables: list[RestoredTable] = Field(default_factory=list)
    checks: list[DrillCheckResult] = Field(default_factory=list)
    verified_at: str | None = None


class DrillObjectives(_Recorded):
    """RTO and RPO as measured, against the objectives (the ``measure`` task's result)."""

    rto_seconds: float | None = None
    rpo_seconds: float | None = None
    rto_objective_seconds: float
    rpo_objective_seconds: float
    rto_ok: bool = False
    rpo_ok: bool = False
    ok: bool = False
    problems: list[str] = Field(default_factory=list)


class DrillTeardown(_Recorded):
    """What teardown removed and what it could not (the ``teardown`` task's result)."""

    actions: list[str] = Field(default_factory=list)
    left_behind: list[str] = Field(default_factory=list)
    clean: bool = False


class DrillReport(BaseModel):
    """A drill run's record; its JSON starts with ``"format": "opsdag.drill-report/2"``."""

    format: Literal["opsdag.drill-report/2"] = DRILL_REPORT_FORMAT
    dag_id: str
    run_id: str
    database: str
    result: DrillResult
    started_at: str | None = None
    finished_at: str | None = None
    backup: DrillBackupUsed | None = None
    target: DrillTarget | None = None
    restore: dict[str, Any] | None = None
    phases: list[DrillPhase] = Field(default_factory=list)
    measure: DrillObjectives | None = None
    verification: DrillVerification | None = None
    teardown: DrillTeardown | None = None
    problems: list[str] = Field(default_factory=list)
    summary: str = ""

    def to_json(self) -> dict[str, Any]:
        """The JSON file's content (``format`` first)."""
        return self.model_dump(mode="json")


def unwritten_report(dag_id: str, run_id: str, database: str) -> DrillReport:
    """What the notification says when the report task itself failed: the drill counts as failed."""
    return DrillReport(
        dag_id=dag_id,
        run_id=run_id,
        database=database,
        result="failed",
        summary=f"Drill of {database} FAILED: the report could not be written",
        problems=["the report task failed"],
    )


def is_drill_report(data: dict[str, Any]) -> bool:
    """A drill report's JSON, of this format or of the one before it."""
    fmt = str(data.get("format") or "")
    return fmt.startswith(DRILL_FORMAT_PREFIX) or data.get("kind") == LEGACY_DRILL_REPORT_KIND


def drill_history(
    dag_id: str, root: Path | str | None = None, *, exclude_run_id: str | None = None
) -> list[dict[str, Any]]:
    """Earlier drill reports of ``dag_id`` (both formats), oldest first, as their JSON."""
    reports = [
        data
        for data in load_reports(dag_id, "", root)  # "": every JSON file, the old format has no header
        if is_drill_report(data) and data.get("run_id") != exclude_run_id
    ]
    return sorted(reports, key=lambda r: str(r.get("started_at") or ""))

"""The release report's two files: the JSON (the record, its summary, its format) and the Markdown.

Written through :func:`opsdag.reports.store.write_report`, the one writer of every report:
``<reports root>/<dag_id>/<run_id>.json`` and ``.md``, each replaced atomically.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from opsdag.reports.release_markdown import render_markdown
from opsdag.reports.release_record import FORMAT, ReleaseRecord, as_record
from opsdag.reports.release_wording import next_actions, summary
from opsdag.reports.store import ReportPaths, write_report


def report_data(record: ReleaseRecord | Mapping[str, Any]) -> dict[str, Any]:
    """The JSON report: its format, its summary and the record, next actions resolved.

    :meth:`ReleaseRecord.from_dict` reads it back.
    """
    record = as_record(record)
    data = {"format": FORMAT, "summary": summary(record), **record.to_dict()}
    data["next_actions"] = next_actions(record)
    return data


def write_release_report(
    record: ReleaseRecord | Mapping[str, Any], root: Path | str | None = None
) -> ReportPaths:
    """Write the run's JSON and Markdown reports under ``root`` (default: the reports root).

    Returns :class:`~opsdag.reports.store.ReportPaths` (``.json``, ``.markdown``; as a
    tuple, JSON first). Both are rendered before either is written, so a record that
    cannot be rendered leaves the previous report untouched; the same record written
    twice gives the same bytes.
    """
    record = as_record(record)
    return write_report(
        report_data(record), render_markdown(record), dag_id=record.dag_id, run_id=record.run_id, root=root
    )

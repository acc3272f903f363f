"""Where reports live and how they are written: ``<reports root>/<dag_id>/<run_id>.md`` and ``.json``.

One writer for every kind of report (release, backup, drill, incident). The JSON starts
with ``"format": "opsdag.<kind>-report/<n>"`` so that tools (and the drill's RTO trend)
can tell kinds and versions apart.

Airflow run ids contain ``:`` and ``+`` (``manual__2026-11-24T05:00:00+00:00``); they are
kept as they are (both are ordinary characters in POSIX file names). Anything outside
Airflow's default ``allowed_run_id_pattern`` (``[A-Za-z0-9_.~:+-]``), ``/`` above all, is
percent-encoded, so a file name never leaves its directory. Each file is replaced
atomically (temporary file in the same directory, fsync, rename): a reader sees the old
report or the new one, never half of one; the same report written twice gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

# Airflow's default [core] allowed_run_id_pattern: these characters stay as they are.
_SAFE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.~:+-")
_MAX_NAME_BYTES = 240  # room for ".json" and a temporary file's prefix within 255 bytes


def report_format(kind: str, version: int = 1) -> str:
    """The JSON header of a kind of report: ``report_format("drill", 2)`` is ``opsdag.drill-report/2``."""
    return f"opsdag.{kind}-report/{version}"


def safe_file_name(name: str) -> str:
    """``name`` usable as one file name: kept as is when made of Airflow's run-id characters.

    Any other character (``/``, ``\\``, spaces, control characters, ``%`` itself) is
    percent-encoded (UTF-8), so distinct names stay distinct and nothing escapes the
    directory; ``.``/``..`` and the empty name are encoded too. A name too long for the
    file system keeps its start and gets a hash of the whole.
    """
    encoded = "".join(ch if ch in _SAFE_CHARS else "".join(f"%{b:02X}" for b in ch.encode()) for ch in name)
    if encoded in ("", ".", ".."):
        encoded = "".join(f"%{b:02X}" for b in name.encode()) or "%00"
    if len(encoded.encode()) > _MAX_NAME_BYTES:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        encoded = f"{encoded[: _MAX_NAME_BYTES - 17]}~{digest}"
    return encoded


class ReportPaths(NamedTuple):
    """The two files of a report; a tuple ``(json, markdown)``, better used by name."""

    json: Path
    markdown: Path


def report_paths(dag_id: str, run_id: str, root: Path | str | None = None) -> ReportPaths:
    """Where a run's report lives: ``<root>/<dag_id>/<run_id>.json`` and ``.md``."""
    if root is None:
        from opsdag.paths import reports_root

        root = reports_root()
    folder = Path(root) / safe_file_name(dag_id)
    name = safe_file_name(run_id)
    return ReportPaths(json=folder / f"{name}.json", markdown=folder / f"{name}.md")


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename; a crash leaves the old file, never half a new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:200]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_report(
    data: dict[str, Any], markdown: str, *, dag_id: str, run_id: str, root: Path | str | None = None
) -> ReportPaths:
    """Write a run's JSON (``data``, which starts with its ``format``) and Markdown report.

    Both texts are made before either file is written, so data that cannot be serialised
    leaves the previous report untouched.
    """
    if not str(data.get("format", "")).startswith("opsdag."):
        raise ValueError("a report's JSON starts with its format, e.g. 'opsdag.release-report/1'")
    if not run_id:
        raise ValueError(f"report of {dag_id!r} has no run_id: cannot name its files")
    paths = report_paths(dag_id, run_id, root)
    json_text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    write_atomically(paths.json, json_text)
    write_atomically(paths.markdown, markdown)
    return paths


def load_reports(
    dag_id: str, report_format_prefix: str, root: Path | str | None = None
) -> list[dict[str, Any]]:
    """Earlier JSON reports of ``dag_id`` whose format starts with ``report_format_prefix``."""
    folder = report_paths(dag_id, "x", root).json.parent
    reports = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and str(data.get("format", "")).startswith(report_format_prefix):
            reports.append(data)
    return reports

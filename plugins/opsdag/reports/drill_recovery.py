"""The point-in-time side of the drill report: the recovery made, the marker proof, the RPO's meaning.

A drill that recovered with the WAL archive records ``recovery`` in ``pick_backup``'s
result (target, restorable range, WAL chain) and in ``verify``'s (last transaction
restored, marker rows against the live database). Older reports have neither.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Fmt = Callable[[Any], str]  # the report's cell formatters (time, yes/no, text)


def recovery_of(backup: Any) -> dict[str, Any] | None:
    """The point-in-time recovery a drill made (``pick_backup``'s ``recovery``), if any."""
    if backup is None:
        return None
    extra = backup.get("recovery") if isinstance(backup, dict) else (backup.model_extra or {}).get("recovery")
    return extra if isinstance(extra, dict) else None


def kind_of(run: dict[str, Any]) -> str:
    """``backup`` (restored as it is) or ``PITR <target>`` (recovered with the WAL archive)."""
    recovery = recovery_of(run.get("backup"))
    return f"PITR {recovery.get('target')}" if recovery else "backup"


def rpo_label(report: Any) -> str:
    recovery = recovery_of(report.backup)
    if not recovery:
        return "RPO (backup age at drill start)"
    if recovery.get("target") == "latest":
        return "RPO (drill start -> last transaction restored)"
    return "RPO (target -> last transaction restored)"


def recovery_lines(recovered: dict[str, Any], when: Fmt, ok: Fmt, cell: Fmt) -> list[str]:
    """A point-in-time copy: where it ended and the marker proof (the base backup's per-table
    checksums describe the data at the backup's end, so they are not compared)."""
    last = recovered.get("last_transaction_at")
    through = recovered.get("recovered_through")
    out = [
        f"- promoted: {ok(recovered.get('promoted'))}; last transaction replayed from the archive: "
        + (when(last) if last else "none (the copy is the base backup as it ended)")
        + (f"; newest data restored: {when(through)}" if through and through != last else ""),
    ]
    marker = recovered.get("marker")
    if isinstance(marker, dict):
        source, restored = marker.get("source") or {}, marker.get("restored") or {}
        verdict = "exact" if marker.get("ok") else "**differs**"
        out.append(
            f"- marker: {restored.get('rows')} marker rows restored, {source.get('rows')} written up to "
            f"{when(marker.get('bound'))} in the live database ({verdict})"
        )
    else:
        out.append(
            "- no `pitr_marker` in the spec: the restored rows are not compared with the live database"
        )
    out += [f"- **problem**: {cell(p)}" for p in recovered.get("problems") or []]
    return out

"""What proves a point-in-time restore: promoted at the target, the marker rows exact, the checks pass.

The per-table row counts and checksums of the base backup's manifest describe the data
at the backup's end, not at the recovery target, so they are not compared here: the base
backup's files were checked against their sha256 before the restore and every WAL segment
replayed against its own (``pitr.plan``). What the replayed WAL brought back is proven by
the marker table (``drill.pitr_marker``) against the live database: exactly the rows
written up to the target (or, recovering to ``latest``, up to the newest one restored).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from opsdag.backups import pitr
from opsdag.backups.drill_verification import run_checks
from opsdag.backups.pitr_plan import marker_verdict


def verify_recovered(
    conn: Any,
    checks: list[dict[str, Any]],
    *,
    target: str,
    marker: dict[str, str] | None,
    source_connect: Callable[[], Any],
) -> dict[str, Any]:
    """``verify_restored``'s result shape, plus ``recovery``: where the copy ended, the marker proof."""
    t0 = time.monotonic()
    facts = pitr.recovered_facts(conn)
    problems = [] if facts["promoted"] else ["the copy is still in recovery: it was not promoted"]
    proof = None
    if marker is not None:
        table, column = marker["table"], marker["time_column"]
        target_time = None if target == "latest" else datetime.fromisoformat(target)
        restored = pitr.marker_counts(conn, table, column, upto=None)
        bound_time = target_time or (
            datetime.fromisoformat(restored["newest"]) if restored["newest"] else None
        )
        restored["after_target"] = pitr.rows_after(conn, table, column, target_time) if target_time else 0
        with source_connect() as source:
            written = (
                pitr.marker_counts(source, table, column, upto=bound_time)
                if bound_time
                else {
                    "rows": 0,
                    "newest": None,
                }
            )
        proof = marker_verdict(written, restored, bound_time.isoformat() if bound_time else "the start")
        problems += [f"marker {table}: {p}" for p in proof["problems"]]
    # The newest data that came back: the last transaction replayed, else (none replayed: the
    # copy is the base backup as it ended) the newest marker restored; the RPO is measured to it.
    newest_marker = proof["restored"]["newest"] if proof else None
    known = [t for t in (facts["last_transaction_at"], newest_marker) if t]  # ISO 8601 in UTC: comparable
    facts["recovered_through"] = max(known, default=None)
    check_results = run_checks(conn, checks)
    bad_checks = [c["name"] for c in check_results if not c["ok"]]
    return {
        "ok": not problems and not bad_checks,
        "tables": [],
        "checks": check_results,
        "failed_tables": [],
        "failed_checks": bad_checks,
        "recovery": {**facts, "target": target, "marker": proof, "problems": problems},
        "seconds": round(time.monotonic() - t0, 3),
    }


def recovery_failure(result: dict[str, Any]) -> str:
    failed = list(result["recovery"]["problems"])
    failed += [f"check {c['name']}: {c['problem']}" for c in result["checks"] if not c["ok"]]
    return "point-in-time verification failed: " + "; ".join(failed)

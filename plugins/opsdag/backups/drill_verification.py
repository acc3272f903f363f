"""What proves a drill's restored copy usable: the same tables, passing checks, RTO and RPO within objectives.

Pure comparisons over a connection to the restored copy (no Airflow here): every table
of the manifest with the same row count and checksum (each table hashed the way its
manifest entry says: ``copy-sha256-v1`` for logical backups since Backups v2,
``record-hash-v1``/``text-hash-v1`` for physical and older logical backups), the spec's checks (each in a
READ ONLY transaction), then the recovery time (RTO: provisioning start to verified
copy) and the age of the data (RPO: backup consistency point to drill start) against
the database's objectives.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from opsdag.backups import stats as table_stats
from opsdag.backups.manifest import Manifest
from opsdag.format import duration


def check_matches(expect: Any, got: Any) -> bool:
    """Does a check's single value equal what the spec expects (bool, number or text)?"""
    if isinstance(expect, bool):
        if isinstance(got, bool):
            return got is expect
        return str(got).strip().lower() in (
            ("t", "true", "1", "yes", "on") if expect else ("f", "false", "0", "no", "off")
        )
    if isinstance(expect, int | float):
        try:
            return float(got) == float(expect)
        except (TypeError, ValueError):
            return False
    return str(got) == str(expect)


def run_checks(conn: Any, checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each check's SQL in a READ ONLY transaction; its first value against ``expect``."""
    results = []
    for check in checks:
        entry = {"name": check["name"], "sql": check["sql"], "expect": check["expect"]}
        try:
            with conn.transaction():
                conn.execute("SET TRANSACTION READ ONLY")
                row = conn.execute(check["sql"]).fetchone()
            got = row[0] if row else None
            entry["got"] = got if isinstance(got, bool | int | float | str | None) else str(got)
            entry["ok"] = row is not None and check_matches(check["expect"], got)
            entry["problem"] = (
                "" if entry["ok"] else f"returned {entry['got']!r}, expected {check['expect']!r}"
            )
        except Exception as exc:
            entry.update(got=None, ok=False, problem=f"failed: {str(exc).strip().splitlines()[0]}")
        results.append(entry)
    return results


def expected_tables(manifest: Manifest) -> list[table_stats.TableStats]:
    """The manifest's tables with what each method needs (copy-sha256-v1: the COPY column list)."""
    return [table_stats.TableStats.from_dict(t.model_dump(by_alias=True)) for t in manifest.tables]


def verify_restored(conn: Any, manifest: Manifest, checks: list[dict[str, Any]]) -> dict[str, Any]:
    """Table by table against the manifest, then the spec's checks. ``ok`` only if all pass."""
    t0 = time.monotonic()
    table_stats.pin_session(conn)
    expected = expected_tables(manifest)
    settings = (manifest.model_extra or {}).get("table_checksum_settings")
    found = table_stats.capture_like(conn, expected, settings)
    tables = [c.to_dict() for c in table_stats.compare(expected, found)]
    check_results = run_checks(conn, checks)
    bad_tables = [t["table"] for t in tables if not t["ok"]]
    bad_checks = [c["name"] for c in check_results if not c["ok"]]
    return {
        "ok": not bad_tables and not bad_checks,
        "tables": tables,
        "checks": check_results,
        "failed_tables": bad_tables,
        "failed_checks": bad_checks,
        "seconds": round(time.monotonic() - t0, 3),
    }


def verification_failure(result: dict[str, Any]) -> str:
    """``verification failed: table public.a: 9 rows, expected 10; check orders: returned 0, ...``."""
    failed = [f"table {t['table']}: {t['problem']}" for t in result["tables"] if not t["ok"]]
    failed += [f"check {c['name']}: {c['problem']}" for c in result["checks"] if not c["ok"]]
    return "verification failed: " + "; ".join(failed)


# -- measure --------------------------------------------------------------------------


def measure(
    *,
    provision_started: datetime | None,
    verified_at: datetime | None,
    drill_started: datetime,
    consistent_at: datetime,
    rto_objective: timedelta,
    rpo_objective: timedelta,
) -> dict[str, Any]:
    """RTO (provision start -> verified copy) and RPO (backup age at drill start) against objectives."""
    rto = (verified_at - provision_started).total_seconds() if provision_started and verified_at else None
    rpo = (drill_started - consistent_at).total_seconds()
    rto_ok = rto is not None and rto <= rto_objective.total_seconds()
    rpo_ok = rpo <= rpo_objective.total_seconds()
    problems = []
    if rto is None:
        problems.append("RTO not measured: no verified copy was reached")
    elif not rto_ok:
        problems.append(_exceeds("RTO", rto, rto_objective.total_seconds()))
    if not rpo_ok:
        problems.append(_exceeds("RPO", rpo, rpo_objective.total_seconds()))
    return {
        "rto_seconds": None if rto is None else round(rto, 3),
        "rpo_seconds": round(rpo, 3),
        "rto_objective_seconds": rto_objective.total_seconds(),
        "rpo_objective_seconds": rpo_objective.total_seconds(),
        "rto_ok": rto_ok,
        "rpo_ok": rpo_ok,
        "ok": rto_ok and rpo_ok,
        "problems": problems,
    }


def _exceeds(what: str, seconds: float, objective: float) -> str:
    """``RTO 42 s exceeds the objective of 30 s``; ``... 30 s by 0.4 s`` where rounding hides the excess."""
    measured, limit = duration(seconds), duration(objective)
    by = f" by {duration(seconds - objective)}" if measured == limit else ""
    return f"{what} {measured} exceeds the objective of {limit}{by}"

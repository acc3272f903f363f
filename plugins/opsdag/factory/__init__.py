"""Turn spec files into DAGs: ``release__<service>``, ``backup__/drill__<database>``, ``runbook__<runbook>``.

``build_dags(kind)`` is what the thin modules in dags/ call. It builds a DAG for every
valid spec and, when some files are broken, one extra placeholder DAG whose validation
fails with every ``file: field: problem`` line: Airflow then shows an import error for
the dags/ module naming the spec file and field, while the DAGs of the valid specs load.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from opsdag import paths
from opsdag.spec.loader import SpecError, load_kind


def _builders(kind: str) -> list[Callable[[Any], Any]]:
    if kind == "services":
        from opsdag.factory.release_dag import release_dag

        return [release_dag]
    if kind == "databases":
        from opsdag.factory.backup_dag import backup_dag
        from opsdag.factory.drill_dag import drill_dag

        return [backup_dag, drill_dag]
    if kind == "runbooks":
        from opsdag.factory.runbook_dag import runbook_dag

        return [runbook_dag]
    raise ValueError(f"unknown spec kind {kind!r}; expected services, databases or runbooks")


def build_dags(kind: str, include: Path | None = None) -> dict[str, Any]:
    """All DAGs of one spec kind, keyed by dag_id, ready for a dags/ module's ``globals()``."""
    loaded = load_kind(include or paths.include_dir(), kind)
    dags: dict[str, Any] = {}
    for spec in loaded.specs.values():
        for build in _builders(kind):
            dag = build(spec)
            if dag is not None:  # e.g. no drill DAG for a database without a drill section
                dags[dag.dag_id] = dag
    if loaded.errors:
        from opsdag.factory.broken import broken_specs_dag

        sentinel = broken_specs_dag(kind, loaded.errors)
        dags[sentinel.dag_id] = sentinel
    return dags


__all__ = ["SpecError", "build_dags"]

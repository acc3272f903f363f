"""The run conf of the backup and drill DAGs, checked whole: unknown keys are refused, named.

Airflow's Params check the keys they declare and let any other key through, so a drill
triggered with ``{"target_conn_id": ...}`` used to run on its usual target as if the key
had never been sent. The first task of each DAG checks the conf against these models and
fails, naming every unknown key, before anything changes.
"""

from __future__ import annotations

from typing import Any

from opsdag.spec.common import StrictModel
from opsdag.spec.field_errors import parse_spec


class DrillConf(StrictModel):
    backup_id: str | None = None
    recovery_target_time: str | None = None


class BackupConf(StrictModel):
    dry_run_retention: bool = False


class ConfRefused(ValueError):
    """The run conf has keys the DAG does not take, or values of the wrong type."""


def check_conf(model: type[StrictModel], conf: dict[str, Any] | None, dag_id: str) -> StrictModel:
    """``conf`` as ``model``, or ``ConfRefused`` listing each ``field: problem``."""
    parsed, errors = parse_spec(model, dict(conf or {}), f"{dag_id} run conf")
    if errors:
        raise ConfRefused("run conf refused:\n" + "\n".join(f"{e.field}: {e.problem}" for e in errors))
    assert parsed is not None
    return parsed

"""A placeholder DAG that makes Airflow report broken spec files as an import error.

Airflow records an import error when a DAG fails ``validate()`` while it is bagged, and
still bags the other DAGs of the same module. The placeholder's timetable fails
validation with the spec errors, so the UI's import errors name each file and field.
"""

from __future__ import annotations

from collections.abc import Sequence

import pendulum
from airflow.sdk import DAG
from airflow.sdk.definitions.timetables.simple import NullTimetable
from airflow.sdk.exceptions import AirflowTimetableInvalid

from opsdag.spec.loader import SpecError


class SpecErrorsTimetable(NullTimetable):
    """Never schedules; its validation fails with the spec errors it carries."""

    def __init__(self, errors: Sequence[SpecError]) -> None:
        super().__init__()
        self.errors = tuple(errors)

    def validate(self) -> None:
        lines = "\n".join(str(e) for e in self.errors)
        raise AirflowTimetableInvalid(f"{len(self.errors)} problem(s) in opsdag spec files:\n{lines}")


def broken_specs_dag(kind: str, errors: Sequence[SpecError]) -> DAG:
    return DAG(
        dag_id=f"opsdag__broken_{kind}_specs",
        schedule=SpecErrorsTimetable(errors),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        tags=["opsdag"],
    )

"""Make a report's summary the DAG run's note, through Airflow's REST API.

Airflow 3 tasks have no database access and the execution API cannot edit a run's note,
so the note goes through the public REST API with the credentials of the Airflow
connection ``airflow_api`` (http: host, port, login, password). Without that connection,
or when the API does not answer, the note is skipped and the reason logged: the report
files are the record, the note is a convenience.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from opsdag.airflow_api import AirflowApiError, AirflowClient, Credentials

CONN_ID = "airflow_api"
NOTE_MAX = 1000  # Airflow's note column


def set_run_note(dag_id: str, run_id: str, note: str, *, log: logging.Logger | None = None) -> bool:
    log = log or logging.getLogger(__name__)
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(CONN_ID)
    except Exception:
        log.info("run note not set: no %r connection to reach the Airflow API", CONN_ID)
        return False
    scheme = conn.schema if conn.schema in ("http", "https") else "http"
    credentials = Credentials(
        f"{scheme}://{conn.host}:{conn.port or 8080}", conn.login or "", conn.password or ""
    )
    try:
        with AirflowClient(credentials, timeout=10) as client:
            client.request(
                "PATCH",
                f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}",
                params={"update_mask": "note"},
                json={"note": note[:NOTE_MAX]},
            )
    except AirflowApiError as exc:
        log.warning("run note not set: %s", exc)
        return False
    return True

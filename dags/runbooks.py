"""Airflow DAGs for runbooks (``runbook__<runbook>``), one per include/runbooks/*.yaml."""

from opsdag.factory import build_dags

globals().update(build_dags("runbooks"))

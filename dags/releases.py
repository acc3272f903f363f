"""Airflow DAGs for releases (``release__<service>``), one per include/services/*.yaml.

All logic is in opsdag.factory; this file only exposes the DAG objects.
"""

from opsdag.factory import build_dags

globals().update(build_dags("services"))

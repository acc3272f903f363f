"""Airflow DAGs for backups and drills (``backup__<db>``, ``drill__<db>``).

One pair per include/databases/*.yaml; all logic is in opsdag.factory.
"""

from opsdag.factory import build_dags

globals().update(build_dags("databases"))

"""opsdag: platform operations (releases, backups, DR drills, runbooks) as Airflow DAGs."""

__version__ = "0.1.0"

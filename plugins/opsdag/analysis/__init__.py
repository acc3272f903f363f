"""opsdag.analysis: metric queries and the judges of health gates (pure, no Airflow import)."""

"""The runbook step catalogue: what a runbook can diagnose, decide and change, and its records.

Each module is a library first (pure decisions plus thin I/O, no Airflow import at the
top), so that a step's choices are tested with tables of cases and its I/O against real
servers; the runbook DAG's operators only call them.

- ``pg_connections``: PostgreSQL connections by state, and terminating idle ones
  (DatabaseConnectionsExhausted).
- ``postmortem``: the record of an incident run, its figures (time to mitigate, MTTR),
  and its Markdown and JSON report.
"""

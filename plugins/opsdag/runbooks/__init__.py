"""The runbook step catalogue: what a runbook can diagnose, decide and change, and its records.

Each module is a library first (pure decisions plus thin I/O, no Airflow import at the
top), so that a step's choices are tested with tables of cases and its I/O against real
servers; the runbook DAG's operators (``opsdag.operators.runbook_*``) only call them.

- ``engine``: the guards (dry run, approval), metric verdicts, each step's action record
  and the run's ``IncidentRecord`` assembled from them.
- ``pg_connections``: PostgreSQL connections by state, and terminating idle ones
  (DatabaseConnectionsExhausted); ``pg_steps`` runs them for a step's server.
- ``actors``: one actor per service (which release and runbook DAGs act on a service, the
  verdict from their active DagRun counts).
- ``last_release``: the service's last promoted release from its reports, and whether a
  runbook may roll it back (younger than ``max_age``, still serving).
- ``drain``: draining a canary (what there is to drain, the weight to 0 then the canary
  removed, read back drained).
- ``metric_wait``: the trigger a verify step waits in (a PromQL value back within bounds).
- ``postmortem``: the record of an incident run, its figures (time to mitigate, MTTR),
  and its Markdown and JSON report.
"""

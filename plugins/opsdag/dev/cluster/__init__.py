"""A distributed Airflow on this machine: the CeleryExecutor layout as separate processes.

``scripts/cluster up|down|status`` (``python -m opsdag.dev.cluster``). See ``topology`` for
what runs and ``control`` for how it is started and stopped.
"""

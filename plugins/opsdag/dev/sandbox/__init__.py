"""The sandbox: the embedded demo platform of real servers on this machine.

``python -m opsdag.sandbox up|down|status [--json]`` runs, each on a free loopback port
with its state in one directory (``paths.sandbox_dir()``): a fleet of demo-app
processes (``demo_app``; versions and their faults in ``include/sandbox/versions.yaml``),
HAProxy in front of them (``haproxy``; canary weights through its runtime API),
Prometheus scraping both (``prometheus``), a steady load generator (``loadgen``) and a
PostgreSQL server with a ``demo`` database (``postgres.PostgresServer``, reusable).
``opsdag.platforms.sandbox.SandboxPlatform`` drives the fleet for release DAGs through
``fleet.FleetController``. Nothing here imports Airflow.
"""

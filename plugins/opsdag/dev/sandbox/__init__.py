"""The sandbox: the embedded demo platform of real servers on this machine.

``python -m opsdag.sandbox up|down|status [--json]`` (``cli``) runs, each on a free
loopback port with its state in one directory (``state.Layout``, ``paths.sandbox_dir()``):
a fleet of demo-app processes (``demo_app``; versions and their faults in
``include/sandbox/versions.yaml``, read by ``versions``), HAProxy in front of them
(``haproxy``; canary weights through its runtime API), Prometheus scraping both
(``prometheus_server``), a steady load generator (``loadgen``), a PostgreSQL server
with a ``demo`` database (``demo_database``, on the reusable ``postgres.PostgresServer``),
an image registry (``image_registry``) and a Docker engine (``docker_engine``) to build
and deploy images by digest (``image_resolution``: the image's version label says which
version runs).

``control`` brings it all up (``starters``, one per server) and down; ``status`` says what
runs where. Release DAGs drive the fleet through ``opsdag.platforms.sandbox.SandboxDriver``
(over ``controller.FleetController``: versions' processes) and
``opsdag.platforms.routers.haproxy.HaproxyRouter`` (over ``routing.RoutingController``:
weights and blue-green's preview route, whose share of the load the load generator
follows); ``fleet`` holds the processes and HAProxy slots, ``fleet_status.FleetStatus``
what runs. Nothing here imports Airflow.
"""

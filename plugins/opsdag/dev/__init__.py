"""Tooling around opsdag that never runs inside Airflow: the sandbox, the demo, standalone Airflow.

The runtime package never imports ``opsdag.dev``, except the sandbox platform driver
(``opsdag.platforms.sandbox``), which drives the sandbox's fleet. ``airflow_env`` is
read by ``scripts/airflow`` and the tests to run Airflow the project's way.
"""

"""Alertmanager's webhook into runbook runs: the payload, the routing and the receiver."""

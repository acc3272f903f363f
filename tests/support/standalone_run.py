"""``airflow standalone`` for a test module, with the module's opsdag directories in its environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from opsdag.airflow_api import Credentials

KEYS = ("OPSDAG_STATE_DIR", "OPSDAG_INCLUDE_DIR", "OPSDAG_SANDBOX_DIR", "OPSDAG_REPORTS_DIR")


@contextmanager
def standalone_airflow(env: dict[str, str]) -> Iterator[Credentials]:
    """Start standalone with ``env``'s opsdag directories (this process's environment is put back
    afterwards), yield its REST credentials, stop it."""
    from opsdag.dev import standalone

    saved = {k: os.environ.get(k) for k in KEYS}
    os.environ.update({k: env[k] for k in KEYS})
    try:
        yield standalone.start(progress=lambda _m: None, timeout=300)
    finally:
        standalone.stop(progress=lambda _m: None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

"""``airflow standalone`` for a test module, with the module's opsdag directories in its environment."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from opsdag.airflow_api import Credentials

KEYS = ("OPSDAG_STATE_DIR", "OPSDAG_INCLUDE_DIR", "OPSDAG_SANDBOX_DIR", "OPSDAG_REPORTS_DIR")


@contextmanager
def standalone_airflow(env: dict[str, str]) -> Iterator[Credentials]:
    """Start standalone with ``env``'s opsdag directories (this process's environment is put back
    afterwards), yield its REST credentials, stop it."""
    from opsdag.dev import standalone

    with pytest.MonkeyPatch.context() as patch:
        for key in KEYS:
            patch.setenv(key, env[key])
        try:
            yield _start(standalone)
        finally:
            standalone.stop(progress=lambda _m: None)


def _start(standalone) -> Credentials:
    """Start standalone, once more if the first start fails: it is the ground the tests stand on,
    not what they test. The suite runs two files at a time on 2 cores, and one CI run saw a start
    not ready after 300 s that takes ~15 s alone; the first failure is printed, not hidden."""
    try:
        return standalone.start(progress=lambda _m: None, timeout=300)
    except RuntimeError as first:
        print(f"\nairflow standalone failed to start, starting it once more: {first}", file=sys.stderr)
        return standalone.start(progress=lambda _m: None, timeout=300)

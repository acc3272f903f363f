"""What the Kubernetes e2e tests share: ``release__checkout`` under ``scripts/airflow dags test``,
and a watcher recording what an object showed while a release ran."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from support.dags_test import DagsTestRun, dags_test

DAG_ID = "release__checkout"
T = TypeVar("T")


def release(env: dict[str, str], conf: dict[str, Any], timeout: float = 300) -> DagsTestRun:
    """``scripts/airflow dags test release__checkout -c <conf>``: its output and the report it wrote."""
    return dags_test(env, DAG_ID, conf, timeout)


@dataclass
class Changes(Generic[T]):
    """Every value ``read`` returned while the ``with`` block ran, in order, each change once.

    Read every 50 ms from a thread (what a traffic manager would route by); None is not recorded.
    """

    read: Callable[[], T | None]
    seen: list[T] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="changes-watch", daemon=True)

    def __enter__(self) -> Changes[T]:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _watch(self) -> None:
        while not self._stop.is_set():
            value = self.read()
            if value is not None and (not self.seen or self.seen[-1] != value):
                self.seen.append(value)
            self._stop.wait(0.05)

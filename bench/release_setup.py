"""The release benchmark's setting up: its include/ copy, a finer load generator, the counts sampler.

The bench changes the sandbox only through what a person could do by hand: its own
include/ copy (short bakes), and its load generator restarted with a shorter
``--interval`` (the counts file is the bench's clock for everything users see).
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import yaml
from release_figures import (
    BLUEGREEN,
    CANARY_STEPS,
    INITIAL_DELAY_S,
    METRIC_INTERVAL_S,
    ROLLING_BAKE_S,
    Sample,
)
from support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]


def make_include(directory: Path) -> Path:
    """include/ with demo-api only (its versions file kept) and short bakes."""
    include = directory / "include"
    shutil.copytree(ROOT / "include" / "sandbox", include / "sandbox")
    for kind in ("services", "databases", "runbooks"):
        (include / kind).mkdir(parents=True, exist_ok=True)
    spec = yaml.safe_load((ROOT / "include" / "services" / "demo-api.yaml").read_text())
    spec["canary"]["steps"] = CANARY_STEPS
    spec["bluegreen"].update(BLUEGREEN)
    spec["rolling"]["bake"] = f"{ROLLING_BAKE_S}s"
    for metric in spec["analysis"]["metrics"]:
        metric["interval"] = f"{METRIC_INTERVAL_S}s"
        metric["initial_delay"] = f"{INITIAL_DELAY_S}s"
    spec.pop("notifications", None)
    (include / "services" / "demo-api.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return include


def finer_counts(sandbox, interval: float) -> None:
    """Restart the sandbox's load generator (same arguments, same process-table entry, so
    ``down`` stops it) writing its counts every ``interval`` s instead of 0.5 s."""
    from opsdag.dev.sandbox.fleet import app_env
    from opsdag.dev.sandbox.state import load_state, locked, save_state

    layout = sandbox.layout
    with locked(layout):
        procs = layout.processes()
        record = procs.read("loadgen")
        argv = list(record.argv)
        procs.stop(record)
        new = procs.spawn("loadgen", [*argv, "--interval", f"{interval:g}"], env=app_env())
        state = load_state(layout)
        state["loadgen"]["pid"] = new.pid
        save_state(layout, state)
    wait_for(lambda: (sandbox.counts() or {}).get("pid") == new.pid, 15, what="the load generator restarted")


class CountsSampler:
    """Reads the counts file every ``interval / 2`` s in a thread; keeps each new version of it."""

    def __init__(self, counts_file: Path, interval: float) -> None:
        self.counts_file = counts_file
        self.period = interval / 2
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> CountsSampler:
        self._thread.start()
        wait_for(lambda: self.samples, 10, what="a first counts sample")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        last = None
        while not self._stop.wait(self.period):
            try:
                data = json.loads(self.counts_file.read_text())
            except (OSError, ValueError):
                continue
            if data.get("updated_at") != last:
                last = data.get("updated_at")
                self.samples.append(Sample.from_counts(data))

    def mark(self) -> int:
        return len(self.samples) - 1

    def since(self, mark: int, until: float) -> list[Sample]:
        """The samples from ``mark`` on, once one was written at ``until`` or later."""
        wait_for(lambda: self.samples[-1].t >= until, 10, what="counts written after the run")
        return self.samples[mark:]

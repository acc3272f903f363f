"""``scripts/airflow dags test <dag_id> -c <conf>`` run as a person runs it from the repository
root: its exit code, output and wall time, and the report the run wrote (JSON and Markdown)."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DagsTestRun:
    returncode: int
    output: str
    report: dict[str, Any] | None
    markdown: str | None
    seconds: float


def dags_test(env: dict[str, str], dag_id: str, conf: dict[str, Any], timeout: float = 300) -> DagsTestRun:
    """Run ``dag_id`` with ``conf`` to its end in ``env``; the report is the one it added under
    ``$OPSDAG_REPORTS_DIR/<dag_id>`` (None: it wrote none)."""
    reports = Path(env["OPSDAG_REPORTS_DIR"]) / dag_id
    before = set(reports.glob("*.json"))
    started = time.monotonic()
    proc = subprocess.run(
        [ROOT / "scripts" / "airflow", "dags", "test", dag_id, "-c", json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    seconds = time.monotonic() - started
    new = sorted(set(reports.glob("*.json")) - before)
    report = json.loads(new[-1].read_text()) if new else None
    markdown = new[-1].with_suffix(".md").read_text() if new else None
    return DagsTestRun(proc.returncode, proc.stdout + proc.stderr, report, markdown, seconds)

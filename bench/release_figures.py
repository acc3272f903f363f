"""The release benchmark's figures, from the load generator's counts and a run's XComs (pure, no I/O).

The load generator (opsdag.dev.sandbox.loadgen) rewrites its counts file every
``--interval`` seconds with cumulative answers per route, version and status; it counts
an answer when it arrives. A change between two consecutive samples of that file places
an answer inside ``(earlier.t, later.t]``: every time read from the counts is such a
bracket, and each figure takes the end of the bracket that makes it LARGER (a detection,
a time to safety or an exposure is never flattered by the resolution). The widest
bracket of a run is its resolution, written next to its figures.
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

MAIN, PREVIEW = "main", "preview"
# What each fault kind looks like at the load generator.
ERRORS, SLOW, CRASH, LATE = "errors", "slow", "crash", "late"
FAULT_KINDS = {ERRORS: "1.2.0-errors", SLOW: "1.3.0-slow", CRASH: "1.4.0-crash", LATE: "1.5.0-late"}
HEALTHY_TAG = "1.1.0"

# The bench's include/ copy (release_setup.make_include): short bakes, same metrics.
CANARY_STEPS = [{"weight": w, "bake": "5s"} for w in (10, 25, 50, 100)]
BLUEGREEN = {
    "preview_share": 0.3,
    "pre_promotion_bake": "8s",
    "post_promotion_bake": "8s",
    "scale_down_delay": "3s",
}
ROLLING_BAKE_S = 8
METRIC_INTERVAL_S, INITIAL_DELAY_S = 2, 4
# The configured waiting of a healthy run, per strategy (rolling: 2 instances, one batch each).
BAKE_S = {"canary": 5 * len(CANARY_STEPS), "bluegreen": 8 + 8 + 3, "rolling": 2 * ROLLING_BAKE_S}


@dataclass(frozen=True)
class Sample:
    """One version of the counts file: when it was written and its cumulative answers per route."""

    t: float
    routes: dict[str, dict[str, dict[str, int]]] = field(
        default_factory=dict
    )  # route -> version -> status -> n

    @classmethod
    def from_counts(cls, data: dict[str, Any]) -> Sample:
        preview = data.get("preview") or {}
        return cls(
            float(data["updated_at"]),
            {MAIN: data.get("by_version_status") or {}, PREVIEW: preview.get("by_version_status") or {}},
        )

    def answers(self, route: str, version: str, errors_only: bool = False) -> int:
        by_status = self.routes.get(route, {}).get(version, {})
        return sum(n for status, n in by_status.items() if not errors_only or status.startswith("5"))


@dataclass(frozen=True)
class Bracket:
    """An answer happened after ``lo`` and at the latest at ``hi`` (epoch seconds)."""

    lo: float
    hi: float

    @property
    def width(self) -> float:
        return self.hi - self.lo


def first_answer(
    samples: list[Sample], route: str, version: str, errors_only: bool = False
) -> Bracket | None:
    """When the first answer (or 5xx) from ``version`` came on ``route`` after ``samples[0]``."""
    base = samples[0].answers(route, version, errors_only)
    for earlier, later in itertools.pairwise(samples):
        if later.answers(route, version, errors_only) > base:
            return Bracket(earlier.t, later.t)
    return None


def last_answer(samples: list[Sample], route: str, version: str) -> Bracket | None:
    """When the last answer from ``version`` came on ``route`` (None: none after ``samples[0]``)."""
    final = samples[-1].answers(route, version)
    if final == samples[0].answers(route, version):
        return None
    for earlier, later in itertools.pairwise(samples):
        if later.answers(route, version) == final:
            return Bracket(earlier.t, later.t)
    raise AssertionError("unreachable: the last sample holds the final count")


def answers_since(samples: list[Sample], route: str, version: str, errors_only: bool = False) -> int:
    return samples[-1].answers(route, version, errors_only) - samples[0].answers(route, version, errors_only)


def failing_decision(xcoms: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The first failing decision of a run: a gate's verdict not ``pass``, or a failed readiness.

    ``xcoms``: ``{"<task_id>.verdict": ..., "<task_id>.readiness": ...}``.
    """
    failing = []
    for key, value in xcoms.items():
        if not isinstance(value, dict) or value.get("decided_at") is None:
            continue
        task_id, _, name = key.rpartition(".")
        name = name.partition("@")[0]  # "verdict@1": try 1's event, read from the triggerer's log
        if (name == "verdict" and value.get("phase") != "pass") or (
            name == "readiness" and value.get("status") != "ready"
        ):
            failing.append((value["decided_at"], task_id, value))
    if not failing:
        return None
    _, task_id, value = min(failing, key=lambda f: f[0])
    return task_id, value


def r(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def faulty_figures(kind: str, samples: list[Sample], xcoms: dict[str, Any], starts: dict[str, Any]) -> dict:
    """Detection, router, safety and exposure of one faulty run (see the module docstring).

    ``starts``: each task's start (epoch s), for the crash's detection (from its deploy task)
    and for where an exposure's time went (traffic -> the judging gate's start -> verdict).
    """
    version = FAULT_KINDS[kind]
    decision = failing_decision(xcoms)
    main_answers = answers_since(samples, MAIN, version)
    out: dict[str, Any] = {
        "kind": kind,
        "version": version,
        "main_answers": main_answers,
        "main_errors": answers_since(samples, MAIN, version, errors_only=True),
        "preview_answers": answers_since(samples, PREVIEW, version),
    }
    brackets: list[Bracket] = []
    if decision is None:
        return {**out, "failing_task": None}
    task_id, value = decision
    decided = float(value["decided_at"])
    abort = value.get("abort") or {}
    out.update(
        failing_task=task_id,
        reason=value.get("reason"),
        verdict_to_router_s=r(abort["done_at"] - decided, 3) if abort.get("done_at") else None,
        router_call_s=r(abort["done_at"] - abort["started_at"], 3) if abort.get("done_at") else None,
        abort_action=abort.get("action"),
        abort_error=abort.get("error"),
        split_after=abort.get("split_after"),
    )
    rollback = xcoms.get("rollback.rollback")
    if rollback:
        out["verdict_to_rollback_done_s"] = r(rollback["finished_at"] - decided)
    if kind == CRASH:
        # No answer ever comes from it: detection counts from the deploy task's start.
        deploy_started = starts.get(task_id)
        out["crash_detect_s"] = r(decided - deploy_started) if deploy_started else None
        return out
    # The fault as the load generator first saw it, on either route (blue-green judges the preview).
    visible = [
        b
        for route in (MAIN, PREVIEW)
        if (b := first_answer(samples, route, version, errors_only=kind != SLOW)) is not None
    ]
    if visible:
        first_fault = min(visible, key=lambda b: b.lo)
        brackets.append(first_fault)
        out["time_to_detect_s"] = r(decided - first_fault.lo)
    judged_route = PREVIEW if task_id.endswith("preview.gate") else MAIN
    last = last_answer(samples, judged_route, version)
    if last is not None:
        # Safe once both hold: the router sends it nothing (the trigger's abort, else the
        # rollback task's end) and no answer from it comes any more.
        router_done = abort.get("done_at") if abort.get("done_at") and not abort.get("error") else None
        if router_done is None and rollback:
            router_done = rollback["finished_at"]
        brackets.append(last)
        out["judged_route"] = judged_route
        out["last_answer_after_verdict_s"] = r(last.hi - decided)
        out["time_to_safety_s"] = r(max(last.hi, router_done or last.hi) - decided)
    first_main, last_main = first_answer(samples, MAIN, version), last_answer(samples, MAIN, version)
    if first_main and last_main:
        brackets += [first_main, last_main]
        out["exposure_s"] = r(last_main.hi - first_main.lo)
        if gate_started := starts.get(task_id):
            # Where it went: traffic before the gate's task ran, the gate's delay and measurements.
            out["traffic_to_gate_start_s"] = r(gate_started - first_main.lo)
            out["gate_start_to_verdict_s"] = r(decided - gate_started)
        onset = first_answer(samples, MAIN, version, errors_only=True) if kind == LATE else None
        if onset:
            out["exposure_after_onset_s"] = r(last_main.hi - onset.lo)
    else:
        out["exposure_s"] = 0.0  # the main route never reached it
    out["resolution_s"] = r(max((b.width for b in brackets), default=0.0), 3)
    out["decision"] = {"decided_at": decided, "abort": abort or None, "from": value.get("from", "xcom")}
    out["counts"] = counts_trace(samples, version)
    return out


def counts_trace(samples: list[Sample], version: str) -> list[list[float | int]]:
    """The faulty version's answers as the counts file showed them (each change and the sample
    before it): ``[t, main, main 5xx, preview, preview 5xx]`` since the run's start, to check a figure."""

    def row(sample: Sample) -> list[float | int]:
        return [
            round(sample.t, 3),
            *(
                sample.answers(route, version, errors) - samples[0].answers(route, version, errors)
                for route in (MAIN, PREVIEW)
                for errors in (False, True)
            ),
        ]

    rows = [row(s) for s in samples]
    keep = [rows[0]]
    for earlier, later in itertools.pairwise(rows):
        if later[1:] != earlier[1:]:
            if keep[-1] is not earlier:
                keep.append(earlier)
            keep.append(later)
    return keep


def stats(values: list[float | None]) -> dict[str, Any]:
    """median, p95 (nearest rank: with fewer than 20 values it is the maximum), max, n."""
    have = sorted(v for v in values if v is not None)
    if not have:
        return {"median": None, "p95": None, "max": None, "n": 0}
    p95 = have[max(0, math.ceil(0.95 * len(have)) - 1)]
    return {"median": r(statistics.median(have)), "p95": r(p95), "max": r(have[-1]), "n": len(have)}


def epoch(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def run_figures(strategy: str, kind: str | None, report: dict, xcoms: dict, tis: list[dict], samples) -> dict:
    """What one run shows: outcome, and its figures (faulty) or overhead (healthy)."""
    starts = {t["task_id"]: epoch(t.get("start_date")) for t in tis}
    failed = [s for s in report.get("stages", []) if s["status"] == "failed"]
    row: dict[str, Any] = {
        "strategy": strategy,
        "status": report["status"],
        "duration_s": report.get("duration_s"),
        "failed_stage": failed[0]["name"] if failed else None,
    }
    if report["status"] != "promoted":
        reason = failed[0]["reason"] if failed else (report.get("failure") or {}).get("error")
        row["why"] = reason
    if kind is None:
        row["kind"] = None
        if report["status"] == "promoted":
            row["overhead_s"] = r(report["duration_s"] - BAKE_S[strategy])
            row["timeline"] = timeline(tis, epoch(report.get("started_at")))
            row["gates"] = gate_times(tis, xcoms)
        return row
    return {**row, **faulty_figures(kind, samples, xcoms, starts)}


def timeline(tis: list[dict], run_start: float | None) -> dict[str, Any]:
    """Where a run's time went: each task's start and end (s after the run's start), the time
    inside tasks (deferred gates included) and the gaps between them (scheduling, task start-up)."""
    if run_start is None:
        return {}
    spans = sorted(
        (epoch(t["start_date"]) - run_start, epoch(t["end_date"]) - run_start, t["task_id"], t.get("state"))
        for t in tis
        if t.get("start_date") and t.get("end_date")
    )
    busy, covered_to = 0.0, 0.0
    for start, end, *_ in spans:
        busy += max(0.0, end - max(start, covered_to))
        covered_to = max(covered_to, end)
    return {
        "in_tasks_s": r(busy),
        "between_tasks_s": r(covered_to - busy),
        "tasks": [[task, r(start), r(end), state] for start, end, task, state in spans],
    }


def gate_times(tis: list[dict], xcoms: dict) -> dict[str, dict[str, float | None]]:
    """Per gate: its task's start -> its verdict -> its task's end (the resume after the trigger)."""
    out = {}
    for t in tis:
        verdict = xcoms.get(f"{t['task_id']}.verdict")
        if not verdict or not t.get("start_date") or not t.get("end_date"):
            continue
        out[t["task_id"]] = {
            "start_to_verdict_s": r(verdict["decided_at"] - epoch(t["start_date"])),
            "verdict_to_task_end_s": r(epoch(t["end_date"]) - verdict["decided_at"]),
        }
    return out

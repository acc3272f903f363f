"""The release benchmark's summary per strategy and its table against the goals of issue 14 (pure)."""

from __future__ import annotations

from typing import Any

from release_figures import CRASH, ERRORS, INITIAL_DELAY_S, LATE, SLOW, stats
from release_figures import METRIC_INTERVAL_S as INTERVAL_S

BENCH_ERROR = "bench error"  # a run the bench could not measure (timeout, no report): apart
EXPOSURE_GOAL_S = INITIAL_DELAY_S + INTERVAL_S + 1
GOALS = {
    "time_to_safety_s": {"p95_at_most": 1.0},
    "exposure_s": {
        "p95_at_most": EXPOSURE_GOAL_S,
        "why": f"initial_delay {INITIAL_DELAY_S} s + one interval {INTERVAL_S} s + 1 s, for faults visible "
        "from the start (errors, latency); late-onset errors are shown apart, without a goal",
    },
    "crash_main_answers": {"total_at_most": 0},
    "overhead_s": {"p95_at_most": 15.0, "why": "a 4-step canary: run start -> report, minus 20 s of bake"},
    "false_rollbacks": {"count_at_most": 0},
    "faulty_promoted": {"count_at_most": 0},
}
COUNTS = "load generator counts: too large by up to one counts interval (0.1 s), never too small"
XCOM = "trigger/task time.time() in XComs: ms"
TASKS = "Airflow task start/end dates: ms"
# (key in the summary, label, goal key or None, resolution)
FIGURES = [
    ("time_to_detect_s", "time to detect", None, COUNTS),
    ("crash_detect_s", "crash: deploy start -> readiness failed", None, f"{TASKS} -> {XCOM}"),
    ("verdict_to_router_s", "verdict -> weight 0 at router (read back)", None, XCOM),
    ("time_to_safety_s", "time to safety (verdict -> router 0, no answer)", "time_to_safety_s", COUNTS),
    ("exposure_s", "exposure (errors, latency: visible from start)", "exposure_s", COUNTS + " at each end"),
    ("traffic_to_gate_start_s", "  of which first traffic -> gate task start", None, f"{COUNTS}; {TASKS}"),
    ("gate_start_to_verdict_s", "  of which gate task start -> verdict", None, f"{TASKS} -> {XCOM}"),
    (
        "late_exposure_after_onset_s",
        "late-onset: exposure from the first error",
        None,
        COUNTS + " at each end",
    ),
    ("late_exposure_s", "late-onset: exposure from the first traffic", None, COUNTS + " at each end"),
    ("verdict_to_rollback_done_s", "verdict -> rollback task done", None, XCOM),
    ("overhead_s", "overhead (run - bake), healthy", "overhead_s", "run start and report time: 0.1 s"),
    ("trigger_to_start_s", "trigger -> run started (healthy)", None, "REST call and run start date: ms"),
    ("between_tasks_s", "  healthy run: time between tasks", None, TASKS),
    ("gate_resume_s", "  healthy gate: verdict -> its task done", None, f"{XCOM} -> {TASKS}"),
]


def strategy_summary(all_rows: list[dict]) -> dict[str, Any]:
    rows = [r for r in all_rows if r["status"] != BENCH_ERROR]
    healthy = [r for r in rows if r.get("kind") is None]
    faulty = [r for r in rows if r.get("kind") is not None]
    seen = [r for r in faulty if r["kind"] != CRASH]
    crashes = [r for r in faulty if r["kind"] == CRASH]
    # The exposure goal is about faults visible from the start (errors, latency); late-onset apart.
    from_start = [r for r in seen if r["kind"] in (ERRORS, SLOW)]
    late = [r for r in seen if r["kind"] == LATE]
    false_rollbacks = [r for r in healthy if r["status"] != "promoted"]
    promoted = [r for r in faulty if r["status"] == "promoted"]
    return {
        "time_to_detect_s": stats([r.get("time_to_detect_s") for r in seen]),
        "crash_detect_s": stats([r.get("crash_detect_s") for r in crashes]),
        "verdict_to_router_s": stats([r.get("verdict_to_router_s") for r in faulty]),
        "time_to_safety_s": stats([r.get("time_to_safety_s") for r in seen]),
        "exposure_s": stats([r.get("exposure_s") for r in from_start]),
        "traffic_to_gate_start_s": stats([r.get("traffic_to_gate_start_s") for r in from_start]),
        "gate_start_to_verdict_s": stats([r.get("gate_start_to_verdict_s") for r in from_start]),
        "late_exposure_after_onset_s": stats([r.get("exposure_after_onset_s") for r in late]),
        "late_exposure_s": stats([r.get("exposure_s") for r in late]),
        "verdict_to_rollback_done_s": stats([r.get("verdict_to_rollback_done_s") for r in faulty]),
        "overhead_s": stats([r.get("overhead_s") for r in healthy]),
        "trigger_to_start_s": stats([r.get("trigger_to_start_s") for r in healthy]),
        "between_tasks_s": stats([(r.get("timeline") or {}).get("between_tasks_s") for r in healthy]),
        "gate_resume_s": stats(
            [g["verdict_to_task_end_s"] for r in healthy for g in (r.get("gates") or {}).values()]
        ),
        "resolution_s": max((r.get("resolution_s") or 0 for r in seen), default=None),
        "crash_main_answers": sum(r.get("main_answers", 0) for r in crashes),
        "crash_runs": len(crashes),
        "abort_errors": [r["abort_error"] for r in faulty if r.get("abort_error")],
        "false_rollbacks": {
            "count": len(false_rollbacks),
            "of": len(healthy),
            "why": [f"{r['run_id'] if 'run_id' in r else r['tag']}: {r.get('why')}" for r in false_rollbacks],
        },
        "faulty_promoted": {
            "count": len(promoted),
            "of": len(faulty),
            "which": [r.get("run_id", r["tag"]) for r in promoted],
        },
        "state_mismatches": [
            f"{r.get('run_id')} ({r['tag']}): {', '.join(r['state_mismatch'])}"
            for r in rows
            if r.get("state_mismatch")
        ],
        "bench_errors": [f"{r['tag']}: {r['why']}" for r in all_rows if r["status"] == BENCH_ERROR],
        "failed_at": {
            k: sorted({r.get("failed_stage") or "-" for r in faulty if r["kind"] == k})
            for k in (ERRORS, SLOW, CRASH, LATE)
        },
    }


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The keys of the earlier (dags test, canary-only) result, with their meaning kept: the
    median/min/max became median/p95/max/n; they now come from the REST runs."""
    every = summary["rest"].get("all", {})
    canary = summary["rest"].get("canary", {})
    return {
        "time_to_detect_s": every.get("time_to_detect_s"),
        "time_to_rollback_s": every.get("time_to_safety_s"),
        "overhead_s": canary.get("overhead_s"),
        "healthy_not_promoted": every.get("false_rollbacks", {}).get("why", []),
    }


def summarize(rest: list[dict], dags_test: list[dict]) -> dict[str, Any]:
    strategies = sorted({r["strategy"] for r in rest}, key=["canary", "bluegreen", "rolling"].index)
    out = {"rest": {s: strategy_summary([r for r in rest if r["strategy"] == s]) for s in strategies}}
    out["rest"]["all"] = strategy_summary(rest)
    out["dags_test"] = {"canary": strategy_summary(dags_test)} if dags_test else {}
    return out


def met(key: str, figure: dict | None) -> str:
    goal = GOALS.get(key, {})
    if not figure or figure.get("p95") is None or "p95_at_most" not in goal:
        return ""
    return "yes" if figure["p95"] <= goal["p95_at_most"] else "NO"


def _cell(figure: dict | None) -> str:
    if not figure or not figure.get("n"):
        return "-"
    return f"{figure['median']:g} / {figure['p95']:g} / {figure['max']:g} (n={figure['n']})"


def table(summary: dict[str, Any]) -> str:
    """Rows: figure x strategy, median / p95 / max (n), the goal, met?, and the dags-test column."""
    rest, dags = summary["rest"], summary.get("dags_test", {}).get("canary")
    other = "dags test (canary)" if dags else ""
    head = (
        f"{'figure':<48} {'strategy':<9} {'REST: median / p95 / max (n)':<32} {'goal':<9} {'met':<4} {other}"
    )
    lines = [head, "-" * len(head)]
    for key, label, goal_key, _res in FIGURES:
        goal = GOALS.get(goal_key or "", {}).get("p95_at_most")
        for strategy, s in rest.items():
            if key == "overhead_s" and strategy not in ("canary", "all"):
                label_here = label.replace("healthy", f"healthy {strategy}")
            else:
                label_here = label
            other = _cell(dags.get(key)) if dags and strategy == "canary" else ""
            ok = (
                met(goal_key, s.get(key))
                if goal_key and (key != "overhead_s" or strategy == "canary")
                else ""
            )
            lines.append(
                f"{label_here:<48} {strategy:<9} {_cell(s.get(key)):<32} "
                f"{'<= ' + format(goal, 'g') + ' s' if goal and ok else '':<9} {ok:<4} {other}"
            )
    lines.append("")
    for strategy, s in rest.items():
        fr, fp = s["false_rollbacks"], s["faulty_promoted"]
        lines.append(
            f"{strategy:<9} false rollbacks {fr['count']}/{fr['of']}, "
            f"faulty promoted {fp['count']}/{fp['of']} (goal 0); crash-at-start answers on the main route "
            f"{s['crash_main_answers']} in {s['crash_runs']} run(s) (goal 0); failed at {s['failed_at']}"
        )
        for why in fr["why"] if strategy != "all" else []:
            lines.append(f"    false rollback: {why}")
        for run in s["state_mismatches"] if strategy != "all" else []:
            lines.append(f"    Airflow failed a resumed task ('task-state-changed-externally'): {run}")
    if dags:
        fr, fp = dags["false_rollbacks"], dags["faulty_promoted"]
        lines.append(
            f"dags test: false rollbacks {fr['count']}/{fr['of']}, faulty promoted {fp['count']}/{fp['of']}"
        )
        for error in dags["bench_errors"]:
            lines.append(f"    not measured: {error}")
    for strategy, s in rest.items():
        for error in s["bench_errors"] if strategy != "all" else []:
            lines.append(f"    {strategy}: not measured: {error}")
    widest = rest.get("all", {}).get("resolution_s") or 0
    lines.append(f"resolution (widest counts bracket of any run: {widest:g} s):")
    lines += [f"  {label.strip():<48} {res}" for _key, label, _goal, res in FIGURES]
    return "\n".join(lines)

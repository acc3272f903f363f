"""The scheduling delay between a release run's tasks, and the issue's figures next to their goals.

For each run (healthy and faulty), for each task that ran: among the tasks it waited for
that ran and had ended by its start, the one that ended last; the gap is the task's
``start_date`` minus that task's ``end_date``, both from the REST API's task instances (ms).
A task "ran" when a worker ran it (a host name or PID: success, failed, or skipped by its
own code, as ``promote`` after a failed gate); one the scheduler skipped or marked
upstream_failed without running is looked through: what it waited for is what the task
after it waited for (``via`` names it). So after a failed canary gate, ``promote`` waits
for that gate through the later stages the scheduler marks upstream_failed one after the
other, and ``rollback`` (one_failed) for the gate itself. The first task has no gap.
When the task's ``scheduled_when`` and ``queued_when`` lie inside the gap (not for a
deferred task: those are its resume's), the gap is split into upstream end -> scheduled
(the scheduler), scheduled -> queued (the executor) and queued -> start (a worker picking
it up and starting it).

The dependency order is the DAG's own: ``GET /api/v2/dags/{dag_id}/tasks`` (each task's
``downstream_task_ids``), read once per bench.
"""

from __future__ import annotations

from collections import deque
from typing import Any
from urllib.parse import quote

from release_figures import epoch, r, stats
from release_table import BENCH_ERROR, GOALS

FINISHED = ("success", "failed", "skipped")
PARTS = ("to_scheduled_s", "scheduled_to_queued_s", "queued_to_start_s")


def upstreams(client, dag: str) -> dict[str, list[str]]:
    """Each task's direct upstream tasks, from the DAG's tasks as the REST API gives them."""
    tasks = client.request("GET", f"/dags/{quote(dag, safe='')}/tasks").get("tasks", [])
    out: dict[str, list[str]] = {t["task_id"]: [] for t in tasks}
    for task in tasks:
        for downstream in task.get("downstream_task_ids") or []:
            out.setdefault(downstream, []).append(task["task_id"])
    return out


def ran(ti: dict) -> bool:
    """A worker ran it (rows written before host names were kept: success or failed)."""
    state = str(ti.get("state"))
    if "hostname" not in ti and "pid" not in ti:
        return state in ("success", "failed")
    return state in FINISHED and bool(ti.get("hostname") or ti.get("pid"))


def waited_for(task_id: str, ups: dict[str, list[str]], tis: dict[str, dict]) -> dict[str, list[str]]:
    """The tasks that ran that ``task_id`` waited for, each with the ones it was seen through
    (breadth first: the shortest way)."""
    found: dict[str, list[str]] = {}
    todo = deque((u, []) for u in ups.get(task_id, []))
    seen = set()
    while todo:
        upstream, via = todo.popleft()
        if upstream in seen:
            continue
        seen.add(upstream)
        ti = tis.get(upstream)
        if ti is not None and ran(ti):
            found[upstream] = via
        else:  # not run (skipped, upstream_failed, no instance): what it waited for
            todo += [(u, [*via, upstream]) for u in ups.get(upstream, [])]
    return found


def gaps(tis: list[dict], ups: dict[str, list[str]]) -> list[dict[str, Any]]:
    """One run's gaps, in the order the tasks started (see the module docstring)."""
    by_id = {t["task_id"]: t for t in tis if t.get("map_index", -1) in (-1, None)}
    started = [t for t in by_id.values() if ran(t) and t.get("start_date")]
    out = []
    for ti in sorted(started, key=lambda t: epoch(t["start_date"])):
        start = epoch(ti["start_date"])
        ended = [
            (epoch(by_id[u]["end_date"]), u, via)
            for u, via in waited_for(ti["task_id"], ups, by_id).items()
            if by_id[u].get("end_date") and epoch(by_id[u]["end_date"]) <= start
        ]
        if not ended:
            continue
        end, upstream, via = max(ended, key=lambda e: e[0])
        gap: dict[str, Any] = {"after": upstream, "task": ti["task_id"], "gap_s": r(start - end, 3)}
        if via:
            gap["via"] = list(reversed(via))  # in dependency order
        scheduled, queued = epoch(ti.get("scheduled_when")), epoch(ti.get("queued_when"))
        if scheduled is not None and queued is not None and end <= scheduled <= queued <= start:
            gap.update(
                to_scheduled_s=r(scheduled - end, 3),
                scheduled_to_queued_s=r(queued - scheduled, 3),
                queued_to_start_s=r(start - queued, 3),
            )
        out.append(gap)
    return out


def delay_summary(rows: list[dict]) -> dict[str, Any]:
    """median / p95 / max / n over every gap of ``rows``; the worst pair; the parts; per pair."""
    every = [
        (row.get("run_id") or row.get("tag"), gap)
        for row in rows
        if row.get("status") != BENCH_ERROR
        for gap in row.get("scheduling_gaps") or []
    ]
    out = stats([gap["gap_s"] for _run, gap in every])
    if not every:
        return out
    run, worst = max(every, key=lambda item: item[1]["gap_s"])
    out["worst"] = {"pair": f"{worst['after']} -> {worst['task']}", "gap_s": worst["gap_s"], "run": run}
    if worst.get("via"):
        out["worst"]["via"] = worst["via"]
    out["runs"] = len({run for run, _gap in every})
    out["parts"] = {part: stats([gap.get(part) for _run, gap in every]) for part in PARTS}
    pairs: dict[str, list[float]] = {}
    for _run, gap in every:
        pairs.setdefault(f"{gap['after']} -> {gap['task']}", []).append(gap["gap_s"])
    out["per_pair"] = {pair: stats(values) for pair, values in pairs.items()}
    return out


def add_scheduling_delay(summary: dict[str, Any], rest: list[dict], dags_test: list[dict]) -> None:
    """``scheduling_delay_s`` next to the other figures of each strategy (and of the dags-test column)."""
    for strategy, figures in summary["rest"].items():
        mine = rest if strategy == "all" else [row for row in rest if row["strategy"] == strategy]
        figures["scheduling_delay_s"] = delay_summary(mine)
    if summary.get("dags_test"):
        summary["dags_test"]["canary"]["scheduling_delay_s"] = delay_summary(dags_test)


def _figure(figure: dict | None, unit: str = "s") -> str:
    if not figure or not figure.get("n"):
        return "not measured"
    return (
        f"median {figure['median']:g} {unit}, p95 {figure['p95']:g} {unit}, "
        f"max {figure['max']:g} {unit} (n={figure['n']})"
    )


def _met(figure: dict | None, goal: float) -> str:
    if not figure or figure.get("p95") is None:
        return "not measured"
    return "met" if figure["p95"] <= goal else "NOT met"


def issue_figures(summary: dict[str, Any], airflow: str) -> str:
    """The issue's three figures of this Airflow, each next to its goal (the delay has none)."""
    rest = summary["rest"]
    overhead = rest.get("canary", {}).get("overhead_s")
    safety = rest.get("all", {}).get("time_to_safety_s")
    overhead_goal = GOALS["overhead_s"]["p95_at_most"]
    safety_goal = GOALS["time_to_safety_s"]["p95_at_most"]
    lines = [
        f"on airflow {airflow}:",
        f"  overhead of a 4-step canary (healthy run - 20 s of bake): {_figure(overhead)}; "
        f"goal p95 <= {overhead_goal:g} s: {_met(overhead, overhead_goal)}",
        f"  time to safety after a failing verdict: {_figure(safety)}; "
        f"goal p95 <= {safety_goal:g} s: {_met(safety, safety_goal)}",
    ]
    for strategy, figures in rest.items():
        delay = figures.get("scheduling_delay_s") or {}
        line = f"  scheduling delay between tasks, {strategy}: {_figure(delay)}; no goal"
        if delay.get("worst"):
            worst = delay["worst"]
            via = f" (via {', '.join(worst['via'])})" if worst.get("via") else ""
            line += f"; worst {worst['gap_s']:g} s: {worst['pair']}{via} in {worst['run']}"
        lines.append(line)
        parts = delay.get("parts") or {}
        if strategy == "all" and parts:
            lines.append(
                "    split where the task's scheduled/queued times lie in the gap (medians): "
                + ", ".join(
                    f"{name} {(parts[part] or {}).get('median')} s (n={(parts[part] or {}).get('n')})"
                    for part, name in zip(
                        PARTS, ("upstream end -> scheduled", "-> queued", "-> started"), strict=True
                    )
                )
            )
    dags = (summary.get("dags_test") or {}).get("canary") or {}
    if dags.get("scheduling_delay_s"):
        lines.append(f"  (airflow dags test, canary: delay {_figure(dags['scheduling_delay_s'])})")
    return "\n".join(lines)

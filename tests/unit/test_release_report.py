"""The release report: what a person reads at 3 a.m., and the files it lands in."""

from __future__ import annotations

import copy
import json
import re
import threading
from pathlib import Path

import pytest

from opsdag.analysis.summary import MetricSummary
from opsdag.notify.release_messages import release_outcome, release_started, stage_verdict
from opsdag.reports.release_facts import stage_from_verdict
from opsdag.reports.release_files import write_release_report as write_report
from opsdag.reports.release_markdown import render_markdown
from opsdag.reports.release_record import RecordError, ReleaseRecord
from opsdag.reports.release_wording import next_actions, summary
from opsdag.reports.store import report_paths, safe_file_name

RUN_ID = "manual__2026-11-24T05:00:00+00:00"
STABLE = "registry.opsdag.local/demo-api:1.0.0"


def stage(name: str, weight: int, status: str, **extra) -> dict:
    return {"name": name, "weight": weight, "bake_s": 30, "status": status, **extra}


def base_record(**changes) -> dict:
    record = {
        "service": "demo-api",
        "dag_id": "release__demo-api",
        "run_id": RUN_ID,
        "image": "registry.opsdag.local/demo-api:1.1.0",
        "previous_image": STABLE,
        "strategy": "canary",
        "reason": "new pricing endpoint",
        "dry_run": False,
        "started_at": "2026-11-24T05:00:00+00:00",
        "preflight": {
            "checks": [
                {"name": "image-available", "ok": True, "detail": "tag declared in versions.yaml"},
                {"name": "stable-healthy", "ok": True, "detail": "error-rate 0.002 within max 0.02"},
            ]
        },
        "stages": [],
        "post_promotion": {"ok": None, "detail": ""},
        "monitoring": {},
        "rollback": None,
        "incidents": [],
        "next_actions": [],
    }
    record.update(changes)
    return copy.deepcopy(record)  # tests change their records freely


# Per-metric results are the gate's own MetricSummary (opsdag.analysis.summary), as dicts.
ERROR_RATE_FAILED = {
    "metric": "error-rate",
    "phase": "fail",
    "last_value": 0.081,
    "last_baseline": 0.004,
    "limit": "max 0.02",
    "passed": 0,
    "failed": 3,
    "inconclusive": 0,
    "errors": 0,
    "reason": "error-rate 0.081 > max 0.02",
}


def passing(name: str, value: float, baseline: float, limit: str) -> dict:
    return {
        "metric": name,
        "phase": "pass",
        "last_value": value,
        "last_baseline": baseline,
        "limit": limit,
        "passed": 3,
        "failed": 0,
        "inconclusive": 0,
        "errors": 0,
        "reason": f"{name} passed (3 pass, 0 fail, 0 inconclusive)",
    }


@pytest.fixture
def rolled_back() -> dict:
    return base_record(
        image="registry.opsdag.local/demo-api:1.2.0-errors",
        status="rolled_back",
        finished_at="2026-11-24T05:00:41+00:00",
        stages=[
            stage(
                "stage_10",
                10,
                "failed",
                started_at="2026-11-24T05:00:02+00:00",
                finished_at="2026-11-24T05:00:35+00:00",
                metrics=[ERROR_RATE_FAILED, passing("latency-p95", 0.042, 0.038, "max 0.3")],
            ),
            stage("stage_25", 25, "not_run"),
            stage("stage_50", 50, "not_run"),
            stage("stage_100", 100, "not_run"),
        ],
        monitoring={
            "availability": 0.9968,
            "latency_p50_s": 0.012,
            "latency_p95_s": 0.041,
            "latency_p99_s": None,
            "error_rate": 0.0081,
            "throughput_rps": 48.6,
        },
        rollback={
            "performed": True,
            "reason": "error-rate 0.081 > max 0.02 at stage_10",
            "started_at": "2026-11-24T05:00:35+00:00",
            "finished_at": "2026-11-24T05:00:39+00:00",
        },
    )


@pytest.fixture
def promoted() -> dict:
    weights = (10, 25, 50, 100)
    return base_record(
        status="promoted",
        finished_at="2026-11-24T05:02:14+00:00",
        stages=[
            stage(
                f"stage_{w}",
                w,
                "passed",
                metrics=[
                    passing("error-rate", 0.003, 0.004, "max 0.02"),
                    passing("latency-p95", 0.04, 0.038, "max 0.3"),
                ],
            )
            for w in weights
        ],
        post_promotion={"ok": True, "detail": "1.1.0 serves 100 %, 2/2 instances ready"},
        monitoring={
            "availability": 0.99999,
            "latency_p50_s": 0.011,
            "latency_p95_s": 0.04,
            "latency_p99_s": 1.5,
            "error_rate": 0.0,
            "throughput_rps": 250.4,
        },
    )


@pytest.fixture
def refused() -> dict:
    return base_record(
        image="registry.opsdag.local/demo-api:9.9.9",
        status="refused",
        duration_s=2.4,
        preflight={
            "checks": [
                {
                    "name": "image-available",
                    "ok": False,
                    "detail": "tag 9.9.9 is not declared in versions.yaml",
                },
                {"name": "stable-healthy", "ok": None, "detail": ""},
            ]
        },
        stages=[stage(f"stage_{w}", w, "not_run") for w in (10, 25, 50, 100)],
    )


@pytest.fixture
def dry_run() -> dict:
    return base_record(
        status="planned",
        dry_run=True,
        duration_s=1.0,
        stages=[stage(f"stage_{w}", w, "skipped") for w in (10, 25, 50, 100)],
    )


# ---------------------------------------------------------------------------- rolled back


def test_rolled_back_summary_names_stage_metric_numbers_and_what_serves(rolled_back):
    assert summary(rolled_back) == (
        "demo-api 1.2.0-errors rolled back at stage_10 (10 %): error-rate 0.081 > max 0.02; "
        "stable 1.0.0 serves 100 %. 41 s."
    )


def test_rolled_back_report_reads_top_down(rolled_back):
    md = render_markdown(rolled_back)
    assert md.startswith("# Release of demo-api: ROLLED BACK\n")
    headings = re.findall(r"^##+ .*$", md, flags=re.M)
    assert headings == [
        "## Summary",
        "## Pre-deployment checks",
        "## Stages",
        "### stage_10: 10 % for 30 s: FAILED",
        "## Post-deployment validation",
        "## Monitoring",
        "## Incidents and rollback",
        "## Next actions",
    ]
    assert (
        "| error-rate | FAILED | 0.081 | 0.004 | max 0.02 | 0 pass, 3 fail, 0 inconclusive | "
        "error-rate 0.081 &gt; max 0.02 |" in md  # text in the Markdown is HTML-escaped
    )
    assert "Not run: stage_25 (25 %), stage_50 (50 %), stage_100 (100 %)." in md
    assert (
        "- Impact: 1.2.0-errors took up to 10 % of traffic for 37 s; rolled back, stable 1.0.0 serves 100 %"
        in md
    )
    assert "- Rollback: performed in 4.0 s" in md  # opsdag.format.duration: tenths under 10 s
    assert "Not run (the release was rolled back before promotion)." in md
    assert "| Latency p99 | no data |" in md
    assert "| Error rate | 0.0081 (0.81 %) |" in md


def test_rolled_back_next_actions_default_to_investigating_the_failed_metric(rolled_back):
    actions = next_actions(rolled_back)
    assert (
        actions[0]
        == "Investigate error-rate of 1.2.0-errors before releasing again: error-rate 0.081 > max 0.02."
    )
    assert "1. Investigate error-rate of 1.2.0-errors" in render_markdown(rolled_back)


def test_given_next_actions_and_incidents_are_kept(rolled_back):
    rolled_back["next_actions"] = ["Page the pricing team"]
    rolled_back["incidents"] = ["INC-42: checkout 5xx during the canary"]
    md = render_markdown(rolled_back)
    assert "1. Page the pricing team" in md
    assert "Investigate" not in md
    assert "- Incident: INC-42: checkout 5xx during the canary" in md


# ---------------------------------------------------------------------------- promoted, refused, dry run


def test_promoted(promoted):
    assert summary(promoted) == (
        "demo-api 1.1.0 promoted: serves 100 % after 4 stages (10 → 25 → 50 → 100 %), "
        "every gate passed. 2 min 14 s."
    )
    md = render_markdown(promoted)
    assert md.startswith("# Release of demo-api: PROMOTED\n")
    assert md.count("| error-rate | passed | 0.003 | 0.004 | max 0.02 |") == 4
    assert "Passed: 1.1.0 serves 100 %, 2/2 instances ready" in md
    assert "| Availability | 99.999 % |" in md  # not rounded up to 100 %
    assert "| Latency p99 | 1.5 s |" in md
    assert "| Error rate | 0 (0 %) |" in md  # a measured zero is a zero
    assert "| Throughput | 250 req/s |" in md
    assert "- Rollback: none" in md
    assert next_actions(promoted) == [
        "Watch error-rate, latency-p95 of demo-api 1.1.0 for the next hour.",
        "If it degrades, release the previous image again: "
        f"python -m opsdag release demo-api --image {STABLE}",
    ]


def test_refused(refused):
    assert summary(refused) == (
        "demo-api 9.9.9 refused before any change: pre-deployment check image-available failed: "
        "tag 9.9.9 is not declared in versions.yaml; stable 1.0.0 serves 100 %. 2.4 s."  # tenths under 10 s
    )
    md = render_markdown(refused)
    assert md.startswith("# Release of demo-api: REFUSED\n")
    assert "| image-available | FAILED | tag 9.9.9 is not declared in versions.yaml |" in md
    assert "| stable-healthy | not run |" in md
    assert "- Impact: none: no traffic reached the new version" in md
    assert "Not run: stage_10 (10 %), stage_25 (25 %), stage_50 (50 %), stage_100 (100 %)." in md
    assert next_actions(refused) == [
        "Fix image-available (tag 9.9.9 is not declared in versions.yaml), then trigger the release again."
    ]


def test_dry_run(dry_run):
    assert summary(dry_run) == (
        "demo-api 1.1.0 dry run: would release by canary, 4 stages: 10 → 25 → 50 → 100 %; "
        "nothing was changed."
    )
    md = render_markdown(dry_run)
    assert md.startswith("# Release of demo-api: PLANNED (dry run)\n")
    assert "Planned, not run (dry run):" in md
    assert "| stage_25 | 25 % | 30 s |" in md
    assert "Not run (dry run)." in md
    assert next_actions(dry_run) == ["Trigger release__demo-api again with dry_run off to release 1.1.0."]


def test_failed_without_rollback_says_to_check_what_serves(rolled_back):
    rolled_back.update(status="failed", rollback=None)
    rolled_back["stages"][0]["status"] = "running"
    rolled_back["stages"][0]["metrics"] = []
    rolled_back["stages"][0]["reason"] = "HAProxy runtime API refused the weight change"
    assert summary(rolled_back) == (
        "demo-api 1.2.0-errors failed at stage_10 (10 %): HAProxy runtime API refused the weight change; "
        "no rollback recorded: check which version serves traffic. 41 s."
    )
    assert next_actions(rolled_back)[0].startswith("Check which version of demo-api serves traffic now")


def test_summary_is_one_line_that_fits_a_dag_run_note(rolled_back, promoted, refused, dry_run):
    for record in (rolled_back, promoted, refused, dry_run):
        assert summary(record).count("\n") == 0
    rolled_back["stages"][0]["metrics"][0]["reason"] = "error-rate " + "9" * 2000
    rolled_back["stages"].extend(stage(f"stage_x{i}", 100, "not_run") for i in range(300))
    rolled_back["previous_image"] = "registry.opsdag.local/demo-api:" + "v" * 128
    assert len(summary(rolled_back)) <= 1000  # Airflow's DagRunNote.content is String(1000)


# ---------------------------------------------------------------------------- missing data


def test_missing_data_reads_no_data_never_zero(rolled_back):
    rolled_back["stages"][0]["metrics"] = [
        {
            "metric": "error-rate",
            "phase": "fail",
            "last_value": None,
            "last_baseline": float("nan"),  # NaN is no data too
            "limit": "max 0.02",
            "passed": 0,
            "failed": 0,
            "inconclusive": 3,
            "errors": 0,
            "reason": "error-rate: inconclusive (3) > inconclusive_limit (2); never promoted on missing data",
        }
    ]
    rolled_back["monitoring"] = {}
    md = render_markdown(rolled_back)
    assert "| error-rate | FAILED | no data | no data | max 0.02 |" in md
    monitoring = md.split("## Monitoring")[1].split("##")[0]
    rows = [line for line in monitoring.splitlines() if line.startswith("| ") and "Figure" not in line]
    assert len(rows) == 6
    assert all(row.endswith("| no data |") for row in rows), rows
    assert not re.search(r"\|\s*0(\.0+)?\s*(%|ms|s|req/s)?\s*\|", md)


def test_gate_summary_shape_is_accepted():
    """The gate's own MetricSummary (opsdag.analysis) goes into the record as it is."""
    gate = MetricSummary(
        metric="error-rate",
        phase="fail",
        reason="error-rate 0.081 > max 0.02 (failures 3 > failure_limit 2)",
        limit="max 0.02",
        last_value=0.081,
        last_baseline=float("inf"),
        passed=0,
        failed=3,
        inconclusive=1,
        errors=0,
    )
    record = ReleaseRecord.from_dict(
        base_record(status="rolled_back", stages=[stage("stage_10", 10, "failed", metrics=[gate.to_dict()])])
    )
    metric = record.stages[0].metrics[0]
    assert metric == gate  # one per-metric type: the record holds the gate's summary itself
    assert (metric.metric, metric.phase, metric.last_value, metric.failed, metric.inconclusive) == (
        "error-rate",
        "fail",
        0.081,
        3,
        1,
    )
    assert metric.last_baseline == float("inf")
    assert (
        json.loads(json.dumps(record.to_dict(), allow_nan=False))["stages"][0]["metrics"][0]["last_baseline"]
        == "inf"
    )


def test_bad_records_are_refused_with_the_field(rolled_back):
    with pytest.raises(RecordError, match=r"^status: 'rolledback' is not one of promoted, rolled_back"):
        ReleaseRecord.from_dict({**rolled_back, "status": "rolledback"})
    broken = copy.deepcopy(rolled_back)
    broken["stages"][0]["metrics"][0]["last_value"] = "high"
    with pytest.raises(RecordError, match=r"stages\[stage_10\]\.metrics\[0\]\[error-rate\]\.last_value"):
        ReleaseRecord.from_dict(broken)
    with pytest.raises(RecordError, match="started_at: 'yesterday' is not an ISO 8601 time"):
        ReleaseRecord.from_dict({**rolled_back, "started_at": "yesterday"})


def test_record_round_trips_through_its_dict_and_the_json_report(rolled_back, tmp_path):
    record = ReleaseRecord.from_dict(rolled_back)
    assert ReleaseRecord.from_dict(record.to_dict()) == record
    json_path, _ = write_report(record, tmp_path)
    again = ReleaseRecord.from_dict(json.loads(json_path.read_text()))
    assert again.stages == record.stages and again.monitoring == record.monitoring
    assert again.next_actions == tuple(next_actions(record))
    assert record.duration_s == 41  # derived from started_at / finished_at


# ---------------------------------------------------------------------------- files


def test_report_lands_at_dag_id_and_run_id(rolled_back, tmp_path):
    paths = write_report(rolled_back, tmp_path)
    assert (paths.json, paths.markdown) == paths  # a tuple, JSON first
    json_path, md_path = paths
    assert json_path == tmp_path / "release__demo-api" / f"{RUN_ID}.json"
    assert md_path == tmp_path / "release__demo-api" / f"{RUN_ID}.md"
    assert md_path.read_text() == render_markdown(rolled_back)
    data = json.loads(json_path.read_text())
    assert data["summary"] == summary(rolled_back)
    assert data["status"] == "rolled_back"
    assert data["monitoring"]["latency_p99_s"] is None
    assert sorted(p.name for p in json_path.parent.iterdir()) == [f"{RUN_ID}.json", f"{RUN_ID}.md"]


def test_default_root_is_the_reports_root(rolled_back, tmp_path, monkeypatch):
    monkeypatch.setenv("OPSDAG_REPORTS_DIR", str(tmp_path / "reports"))
    json_path, _ = report_paths("release__demo-api", RUN_ID)
    assert json_path == tmp_path / "reports" / "release__demo-api" / f"{RUN_ID}.json"


def test_rewriting_a_run_is_idempotent_and_overwrites(rolled_back, tmp_path):
    first = [p.read_bytes() for p in write_report(rolled_back, tmp_path)]
    assert [p.read_bytes() for p in write_report(rolled_back, tmp_path)] == first
    rolled_back["incidents"] = ["INC-7"]
    json_path, md_path = write_report(rolled_back, tmp_path)
    assert "INC-7" in md_path.read_text() and json.loads(json_path.read_text())["incidents"] == ["INC-7"]
    assert len(list(json_path.parent.iterdir())) == 2  # no temporary file left behind


def test_a_failed_write_leaves_the_previous_report_whole(rolled_back, tmp_path):
    json_path, md_path = write_report(rolled_back, tmp_path)
    before = json_path.read_bytes(), md_path.read_bytes()
    rolled_back["reason"] = "bad \ud800 surrogate"  # cannot be encoded: the write fails half way
    with pytest.raises(UnicodeEncodeError):
        write_report(rolled_back, tmp_path)
    assert (json_path.read_bytes(), md_path.read_bytes()) == before
    assert len(list(json_path.parent.iterdir())) == 2


def test_readers_never_see_half_a_report(rolled_back, promoted, tmp_path):
    """A reader polling the file while it is rewritten always parses a whole report."""
    promoted["run_id"] = rolled_back["run_id"]
    json_path, _ = write_report(rolled_back, tmp_path)
    expected = {json.dumps(json.loads(json_path.read_text()))}
    done = threading.Event()
    seen: list[str] = []

    def read() -> None:
        while not done.is_set():
            seen.append(json.dumps(json.loads(json_path.read_text())))  # raises on a partial file

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(100):
            write_report(promoted if i % 2 else rolled_back, tmp_path)
    finally:
        done.set()
        reader.join()
    write_report(promoted, tmp_path)
    expected.add(json.dumps(json.loads(json_path.read_text())))
    assert seen and set(seen) <= expected


@pytest.mark.parametrize(
    ("run_id", "file_name"),
    [
        (RUN_ID, RUN_ID),
        ("scheduled__2026-11-24T05:00:00+00:00", "scheduled__2026-11-24T05:00:00+00:00"),
        ("a/../../etc/passwd", "a%2F..%2F..%2Fetc%2Fpasswd"),
        ("..", "%2E%2E"),
        ("with space%", "with%20space%25"),
        ("", "%00"),
    ],
)
def test_run_ids_become_safe_file_names(run_id, file_name):
    assert safe_file_name(run_id) == file_name
    assert "/" not in safe_file_name(run_id)


def test_a_hostile_run_id_stays_in_its_directory(rolled_back, tmp_path):
    rolled_back["run_id"] = "../../escape"
    json_path, md_path = write_report(rolled_back, tmp_path)
    assert json_path.parent == md_path.parent == tmp_path / "release__demo-api"
    assert Path(json_path).resolve().is_relative_to(tmp_path.resolve())


def test_very_long_run_ids_stay_within_file_name_limits():
    name = safe_file_name("x" * 400)
    assert len(name.encode()) <= 240
    assert safe_file_name("x" * 400) != safe_file_name("x" * 401)


# ---------------------------------------------------------------------------- Slack messages (pure)


def test_outcome_message_is_the_summary_with_figures(rolled_back):
    text, blocks = release_outcome(rolled_back, report_url="http://reports.local/r.md")
    assert text == summary(rolled_back).replace(">", "&gt;")
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "demo-api: rolled back", "emoji": False},
    }
    body = json.dumps(blocks, ensure_ascii=False)
    assert "*Latency p95*\\n41 ms" in body
    assert "*Stages:* stage_10 FAILED \u00b7 stage_25 not run" in body
    assert "<http://reports.local/r.md|report>" in body


def test_stage_message_lists_each_metric_with_value_baseline_and_limit(rolled_back):
    text, blocks = stage_verdict(
        service_name="demo-api", image=rolled_back["image"], stage=rolled_back["stages"][0]
    )
    assert text == "demo-api 1.2.0-errors stage_10 (10 %) FAILED: error-rate 0.081 &gt; max 0.02"
    fields = [f["text"] for f in blocks[1]["fields"]]
    assert fields == [
        "error-rate FAILED: 0.081 (stable 0.004), limit max 0.02; 0 pass, 3 fail",
        "latency-p95 passed: 0.042 (stable 0.038), limit max 0.3; 3 pass, 0 fail",
    ]


def test_stage_message_takes_a_gate_verdict_as_the_gate_pushes_it():
    """The health gate's ``verdict`` XCom: gate name, phase pass/fail, MetricSummary dicts, epoch times."""
    verdict = {
        "gate": "stage_25",
        "weight": 25,
        "phase": "pass",
        "reason": "every metric passed",
        "started_at": 1795496400.0,
        "metrics": [
            MetricSummary(
                "error-rate", "pass", "error-rate passed", "max 0.02", 0.003, None, 3, 0, 0, 0
            ).to_dict()
        ],
    }
    text, blocks = stage_verdict(service_name="demo-api", image=None, stage=verdict)
    assert text == "demo-api stage_25 (25 %) passed: error-rate 0.003 (max 0.02)"
    assert blocks[1]["fields"][0]["text"] == "error-rate passed: 0.003, limit max 0.02; 3 pass, 0 fail"
    stage_25 = stage_from_verdict(verdict).model_dump()
    record = ReleaseRecord.from_dict(base_record(status="promoted", stages=[stage_25]))
    assert record.stages[0].started_at == "2026-11-24T05:00:00+00:00"


def test_people_text_is_escaped_and_block_kit_limits_hold():
    text, blocks = release_started(
        service_name="demo-api",
        image="registry.opsdag.local/demo-api:1.2.0",
        strategy="canary",
        stages=[{"name": f"stage_{w}", "weight": w, "bake_s": 30} for w in (10, 25, 50, 100)],
        reason="<!channel> fix & ship " + "x" * 5000,
    )
    assert "<!channel>" not in text and "&lt;!channel&gt; fix &amp; ship" in text
    assert "<!channel>" not in json.dumps(blocks)
    for block in blocks:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
        if "text" in block and block["type"] == "section":
            assert len(block["text"]["text"]) <= 3000
        assert len(block.get("fields", [])) <= 10
    assert blocks[1]["text"]["text"].startswith("*1.2.0* by canary: 10 → 25 → 50 → 100 %, 30 s each.")

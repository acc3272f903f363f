"""Pure parts of backups and drills: ids, guards, checks, objectives, reports, messages, spec."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from opsdag.backups.drill_engine import DrillRefused, check_target, drill_names
from opsdag.backups.drill_verification import check_matches, measure
from opsdag.backups.engine import backup_id_for
from opsdag.backups.logical import compression_args, dump_argv, missing_table_data, restore_argv
from opsdag.backups.pg import PgTarget
from opsdag.backups.stats import TableStats, compare
from opsdag.backups.storage import backup_id_time, is_backup_id
from opsdag.format import duration, size
from opsdag.notify.backup_messages import backup_message
from opsdag.reports.backup_report import build_backup_report
from opsdag.reports.drill_report import build_drill_report, render_markdown, write_drill_report
from opsdag.spec.database import DatabaseSpec
from opsdag.spec.loader import parse_spec

SOURCE = PgTarget("db.internal", 5432, "backup", "shop", password="s3cret")


def test_backup_ids_sort_by_time_and_are_stable_per_run():
    first = backup_id_for(datetime(2026, 3, 1, 2, 0, tzinfo=UTC), "scheduled__2026-03-01")
    assert first == backup_id_for(datetime(2026, 3, 1, 2, 0, tzinfo=UTC), "scheduled__2026-03-01")
    assert first.startswith("20260301T020000Z-") and is_backup_id(first)
    assert backup_id_time(first) == datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    later = backup_id_for(datetime(2026, 3, 2, 2, 0, tzinfo=UTC), "scheduled__2026-03-02")
    assert sorted([later, first]) == [first, later]
    assert not is_backup_id(".partial-x") and backup_id_time("nope") is None


def test_the_password_is_not_in_repr_or_any_argv():
    assert "s3cret" not in repr(SOURCE)
    argv = dump_argv(
        "/usr/bin/pg_dump", Path("/b/data"), jobs=4, snapshot="0000-1", compress=["--compress=6"]
    )
    restore = restore_argv("/usr/bin/pg_restore", Path("/b/data"), jobs=2)
    assert not any("s3cret" in a or "shop" in a or "db.internal" in a for a in argv + restore)
    assert "--snapshot=0000-1" in argv and "--no-password" in argv and "--no-password" in restore


def test_passfile_environment_is_private_and_removed():
    with SOURCE.tool_env({"PATH": "/bin", "PGPASSWORD": "leak"}) as env:
        passfile = Path(env["PGPASSFILE"])
        assert oct(passfile.stat().st_mode & 0o777) == "0o600"
        assert passfile.read_text() == "*:*:*:backup:s3cret\n"
        assert "PGPASSWORD" not in env and "s3cret" not in "".join(env.values())
        assert (env["PGHOST"], env["PGPORT"], env["PGDATABASE"]) == ("db.internal", "5432", "shop")
    assert not passfile.exists() and not passfile.parent.exists()


def test_compression_choices_are_described_for_the_manifest():
    assert compression_args("gzip", 6, 15) == (
        ["--compress=6"],
        {"algorithm": "gzip", "level": 6, "applied_by": "pg_dump"},
    )
    assert compression_args("zstd", 3, 15)[1]["applied_by"] == "opsdag"
    assert compression_args("zstd", 3, 16) == (
        ["--compress=zstd:3"],
        {"algorithm": "zstd", "level": 3, "applied_by": "pg_dump"},
    )
    assert compression_args("none", 6, 15)[0] == ["--compress=0"]


def test_missing_table_data_reads_pg_restore_list_lines():
    lines = [
        "3345; 0 16390 TABLE DATA public orders postgres",
        "3346; 0 16400 TABLE DATA Odd Schema Mixed Case postgres",
        "215; 1259 16385 TABLE public customers postgres",
    ]
    tables = [("public", "orders"), ("Odd Schema", "Mixed Case"), ("public", "customers")]
    assert missing_table_data(lines, tables) == ["public.customers"]


def test_drill_names_are_per_run_and_safe():
    a = drill_names("drill__Demo-DB", "manual__2026-01-01T00:00:00+00:00", "Demo-DB")
    b = drill_names("drill__Demo-DB", "manual__2026-01-02T00:00:00+00:00", "Demo-DB")
    assert a.scratch_db != b.scratch_db and a.scratch_db.startswith("opsdag_drill_demo_db_")
    assert len(a.scratch_db) <= 63 and a.scratch_db.replace("_", "").isalnum()
    assert a.marker == "opsdag drill drill__Demo-DB manual__2026-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    ("target", "conn_id", "extra", "reason"),
    [
        (PgTarget("db.internal", 5432, "u", "postgres"), "drill", {}, "not marked"),
        (
            PgTarget("db.internal", 5432, "u", "postgres"),
            "drill",
            {"opsdag_drill_target": "yes"},
            "not marked",
        ),
        (
            PgTarget("db.internal", 5432, "u", "shop"),
            "drill",
            {"opsdag_drill_target": True},
            "source database",
        ),
        (
            PgTarget("db.internal", 5432, "u", "postgres"),
            "source",
            {"opsdag_drill_target": True},
            "own connection",
        ),
    ],
)
def test_the_drill_target_guard_refuses(target, conn_id, extra, reason):
    with pytest.raises(DrillRefused, match=reason):
        check_target(
            source_conn_id="source",
            source=SOURCE,
            target_conn_id=conn_id,
            target=target,
            target_extra=extra,
            scratch_db="opsdag_drill_x",
        )


def test_the_drill_target_guard_sees_through_loopback_aliases_and_allows_a_scratch_db():
    local = PgTarget("127.0.0.1", 5432, "u", "shop")
    with pytest.raises(DrillRefused, match="source database"):
        check_target(
            source_conn_id="s",
            source=PgTarget("localhost", 5432, "u", "shop"),
            target_conn_id="d",
            target=local,
            target_extra={"opsdag_drill_target": True},
            scratch_db="opsdag_drill_x",
        )
    check_target(  # same server, other (maintenance) database: a scratch database next to the source is fine
        source_conn_id="s",
        source=PgTarget("localhost", 5432, "u", "shop"),
        target_conn_id="d",
        target=PgTarget("127.0.0.1", 5432, "u", "postgres"),
        target_extra={"opsdag_drill_target": True},
        scratch_db="opsdag_drill_x",
    )


@pytest.mark.parametrize(
    ("expect", "got", "ok"),
    [
        (True, True, True),
        (True, "t", True),
        (True, False, False),
        (False, "false", True),
        (300, 300, True),
        (300, "300", True),
        (2.5, 2.50, True),
        (300, 299, False),
        ("ok", "ok", True),
        ("ok", "OK", False),
        (1, None, False),
    ],
)
def test_check_values_compare_by_the_type_of_the_expectation(expect, got, ok):
    assert check_matches(expect, got) is ok


def test_rto_and_rpo_against_objectives():
    t0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
    ok = measure(
        provision_started=t0,
        verified_at=t0 + timedelta(seconds=42),
        drill_started=t0 - timedelta(seconds=5),
        consistent_at=t0 - timedelta(hours=3),
        rto_objective=timedelta(minutes=15),
        rpo_objective=timedelta(hours=26),
    )
    assert (ok["rto_seconds"], ok["rpo_seconds"], ok["ok"], ok["problems"]) == (42.0, 10795.0, True, [])
    late = measure(
        provision_started=t0,
        verified_at=t0 + timedelta(seconds=42),
        drill_started=t0,
        consistent_at=t0 - timedelta(days=2),
        rto_objective=timedelta(seconds=30),
        rpo_objective=timedelta(hours=26),
    )
    assert late["ok"] is False and late["rto_ok"] is False and late["rpo_ok"] is False
    assert late["problems"] == [
        "RTO 42 s exceeds the objective of 30 s",
        "RPO 48 h exceeds the objective of 26 h",
    ]
    none = measure(
        provision_started=t0,
        verified_at=None,
        drill_started=t0,
        consistent_at=t0,
        rto_objective=timedelta(seconds=30),
        rpo_objective=timedelta(hours=1),
    )
    assert none["rto_seconds"] is None and "no verified copy" in none["problems"][0]


def test_table_comparison_names_each_difference():
    expected = [TableStats("public", "a", 10, "1", "record-hash-v1"), TableStats("public", "b", 5, "2", "x")]
    actual = {"public.a": TableStats("public", "a", 9, "1"), "public.b": "table missing"}
    result = compare(expected, actual)
    assert [(c.table, c.ok, c.problem) for c in result] == [
        ("public.a", False, "9 rows, expected 10"),
        ("public.b", False, "table missing"),
    ]


def report_data(result_ok: bool = True, **overrides):
    tables = [
        {
            "table": "public.orders",
            "expected_rows": 5,
            "actual_rows": 5,
            "expected_checksum": "9",
            "actual_checksum": "9" if result_ok else "8",
            "ok": result_ok,
            "problem": "" if result_ok else "checksum differs",
        }
    ]
    data = {
        "dag_id": "drill__demo-db",
        "run_id": "manual__2026-01-02T00:00:00+00:00",
        "database": "demo-db",
        "started_at": "2026-01-02T00:00:00+00:00",
        "finished_at": "2026-01-02T00:01:00+00:00",
        "states": {},
        "errors": {} if result_ok else {"verify": "AirflowFailException: verification failed"},
        "pick": {
            "backup_id": "20260101T020000Z-abc123",
            "method": "logical",
            "bytes": 12345,
            "consistent_at": "2026-01-01T02:00:00+00:00",
            "location": "file:///b",
            "server_version": "15",
        },
        "provision": {
            "scratch_db": "opsdag_drill_demo_db_1",
            "server": "h:5432",
            "task_seconds": 0.3,
            "started_at": "2026-01-02T00:00:01+00:00",
        },
        "restore": {"pg_restore_seconds": 3.2, "task_seconds": 3.5},
        "verification": {
            "ok": result_ok,
            "tables": tables,
            "checks": [
                {"name": "orders", "sql": "select 1", "expect": 1, "got": 1, "ok": True, "problem": ""}
            ],
        },
        "measure": {
            "rto_seconds": 4.2,
            "rpo_seconds": 79200.0,
            "rto_objective_seconds": 900.0,
            "rpo_objective_seconds": 93600.0,
            "rto_ok": True,
            "rpo_ok": True,
            "ok": True,
            "problems": [],
        }
        if result_ok
        else None,
        "teardown": {
            "actions": ["dropped database opsdag_drill_demo_db_1"],
            "left_behind": [],
            "clean": True,
        },
    }
    data.update(overrides)
    return data


def test_a_passed_drill_report_and_its_trend(tmp_path):
    first = build_drill_report(**report_data())
    assert first.result == "passed" and first.problems == []
    assert first.summary == (
        "Drill of demo-db PASSED, backup 20260101T020000Z-abc123, RTO 4.2 s (objective 15 min), "
        "RPO 22 h (objective 26 h), 1/1 tables and 1/1 checks match"
    )
    write_drill_report(first, tmp_path)
    second = build_drill_report(
        **report_data(run_id="manual__2026-01-09", started_at="2026-01-09T00:00:00+00:00")
    )
    written = write_drill_report(second, tmp_path)
    assert written.json.name == "manual__2026-01-09.json"
    markdown = written.markdown.read_text()
    assert markdown.startswith("# DR drill of `demo-db`: PASSED")
    trend = markdown.split("## Trend")[1]
    assert trend.index("manual__2026-01-02") < trend.index("manual__2026-01-09")
    assert trend.count("| passed |") == 2 and "← this drill" in trend


def test_a_failed_drill_report_leads_with_the_cause():
    report = build_drill_report(**report_data(result_ok=False))
    assert report.result == "failed"
    assert report.problems == [
        "verify: AirflowFailException: verification failed",
        "table public.orders: checksum differs",
    ]
    markdown = render_markdown(report, [])
    assert "| `public.orders` | 5 | 5 | differs | **NO** | checksum differs |" in markdown
    assert "Not measured" in markdown
    refused = build_drill_report(
        **report_data(
            result_ok=False,
            provision=None,
            restore=None,
            verification=None,
            teardown=None,
            errors={"provision": "AirflowFailException: refused: not marked"},
        )
    )
    assert refused.result == "refused" and refused.summary.startswith("Drill of demo-db REFUSED")
    assert "did not run (nothing was provisioned)" in render_markdown(refused, [])


def test_backup_messages_give_size_time_throughput_or_the_failure():
    outcome = build_backup_report(
        database="demo-db",
        backup={
            "backup_id": "b1",
            "method": "logical",
            "database_bytes": 1_054_000_000,
            "timings": {"total_seconds": 4.0},
        },
        manifest={"backup_id": "b1", "bytes": 19_000_000},
        verification={"timings": {"total_seconds": 0.4}},
        retention={"deleted": ["a", "b"]},
        failed_task=None,
        error=None,
        run_id="r",
    )
    text, blocks = backup_message(outcome)
    assert text == (
        ":white_check_mark: Backup of *demo-db* `b1` verified: 19.0 MB stored from 1.1 GB in 4.0 s "
        "(263.5 MB/s), verified in 0.4 s; 2 old backup(s) pruned"
    )
    assert blocks[0]["text"]["text"] == text
    failed = build_backup_report(
        database="demo-db",
        backup=None,
        manifest=None,
        verification=None,
        retention=None,
        failed_task="preflight",
        error="AirflowFailException: server down\nmore",
        run_id="r",
    )
    assert backup_message(failed)[0] == (
        ":red_circle: Backup of *demo-db* FAILED at `preflight`: AirflowFailException: server down (run `r`)"
    )
    assert (size(999), duration(125), duration(7300)) == (
        "999 B",
        "2 min 5 s",
        "2 h 1 min",
    )


def test_the_database_spec_additions_and_their_errors():
    data = yaml.safe_load((Path(__file__).parents[2] / "include" / "databases" / "demo-db.yaml").read_text())
    spec = DatabaseSpec.model_validate(data)
    # demo-db is physical and recovers with its WAL in drills: no boot of each backup for table stats
    assert spec.backup.table_checksums is False and spec.notifications.slack_conn_id is None
    gzip_12 = {**data["backup"], "compression": "gzip", "compression_level": 12}
    bad = {**data, "backup": gzip_12, "notifications": {"slack": "x"}}
    bad["drill"] = {**data["drill"], "target_conn_id": data["connection_id"]}
    _, errors = parse_spec(DatabaseSpec, bad, "demo-db.yaml")
    messages = sorted(str(e) for e in errors)
    assert messages[0].startswith("demo-db.yaml: backup.compression_level: 12 is not a gzip level")
    assert messages[1].startswith("demo-db.yaml: drill: target_conn_id 'postgres_demo' is the database's own")
    assert messages[2].startswith("demo-db.yaml: notifications.slack: unknown key")
    zstd = {**data, "backup": {**data["backup"], "compression": "zstd", "compression_level": 19}}
    assert parse_spec(DatabaseSpec, zstd, "x")[1] == []


def test_data_files_map_to_tables_by_oid_and_a_table_without_one_is_refused():
    from opsdag.backups.copy_checksum import table_digests
    from opsdag.backups.dump_digest import DataDigest
    from opsdag.backups.pg import ToolError

    toc = [
        "3358; 0 16399 TABLE DATA public orders postgres",
        "3359; 0 16500 TABLE DATA Odd Schema Mixed Case postgres",  # spaces: the oid decides
        "3360; 1259 16600 TABLE public other postgres",
    ]
    digests = {
        3358: DataDigest("3358.dat.gz", 3, "ab" * 32, 30),
        3359: DataDigest("3359.dat.gz", 0, "cd" * 32, 0),
    }
    columns = {16399: ("public", "orders", ["id"]), 16500: ("Odd Schema", "Mixed Case", ["a b", "c"])}
    tables = [("Odd Schema", "Mixed Case"), ("public", "orders")]
    stats = table_digests(toc, digests, columns, tables, checksum=True)
    assert [(t.key, t.rows, t.checksum, t.method, t.columns) for t in stats] == [
        ("Odd Schema.Mixed Case", 0, "cd" * 32, "copy-sha256-v1", ["a b", "c"]),
        ("public.orders", 3, "ab" * 32, "copy-sha256-v1", ["id"]),
    ]
    assert [t.to_dict() for t in table_digests(toc, digests, columns, tables[1:], checksum=False)] == [
        {"schema": "public", "name": "orders", "rows": 3, "checksum": None, "method": None}
    ]
    with pytest.raises(ToolError, match=r"no data file for public\.missing"):
        table_digests(toc, digests, columns, [*tables, ("public", "missing")], checksum=True)

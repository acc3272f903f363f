"""WAL retention's decision: prune below the oldest kept base backup's start, never what one needs."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime

from opsdag.backups.wal_archive import backup_wal_range, check_archive
from opsdag.backups.wal_names import Segment
from opsdag.backups.wal_push import archive_dir
from opsdag.backups.wal_retention import apply_wal_retention, plan_wal_retention

MIB = 1024 * 1024


def seg(number: int, timeline: int = 1) -> str:
    return Segment(timeline, number).name


ARCHIVE = [
    *(seg(n) for n in range(2, 12)),
    f"{seg(4)}.00000028.backup",
    f"{seg(8)}.00000060.backup",
    f"{seg(3)}.partial",
    "00000002.history",
]


def test_segments_below_the_oldest_kept_start_are_pruned():
    plan = plan_wal_retention(ARCHIVE, {"b-new": Segment(1, 8), "b-old": Segment(1, 6)}, 16 * MIB)
    assert plan.boundary == seg(6)
    assert plan.reason == f"keeping WAL from {seg(6)}, the start of the oldest kept base backup b-old"
    assert plan.delete == sorted(
        [seg(2), seg(3), seg(4), seg(5), f"{seg(3)}.partial", f"{seg(4)}.00000028.backup"]
    )
    assert seg(6) in plan.keep and seg(11) in plan.keep and f"{seg(8)}.00000060.backup" in plan.keep
    assert "00000002.history" in plan.keep  # history files are always kept
    assert plan.to_dict()["delete_range"] == [seg(2), seg(5)]  # first and last, by name


def test_nothing_is_pruned_without_a_kept_physical_backup_or_when_a_start_is_unknown():
    none = plan_wal_retention(ARCHIVE, {}, 16 * MIB)
    assert none.delete == [] and none.reason == "nothing pruned: no kept physical base backup"
    unknown = plan_wal_retention(ARCHIVE, {"b": Segment(1, 9)}, 16 * MIB, unknown=["b-odd"])
    assert unknown.delete == [] and "b-odd" in unknown.reason and len(unknown.keep) == len(ARCHIVE)


def test_a_backup_starting_at_the_oldest_segment_keeps_everything():
    plan = plan_wal_retention(ARCHIVE, {"b": Segment(1, 2)}, 16 * MIB)
    assert plan.delete == [] and plan.boundary == seg(2)


def fake_archive(root, database="db", numbers=range(2, 10)):
    """Sparse 16 MiB segments with their checksums, as ``wal push`` leaves them."""
    directory = archive_dir(root, database)
    directory.mkdir(parents=True)
    for n in numbers:
        path = directory / seg(n)
        with open(path, "wb") as fh:
            fh.truncate(16 * MIB)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        (directory / f"{seg(n)}.sha256").write_text(f"{digest}  {seg(n)}\n")
    os.utime(directory / seg(max(numbers)), (1_800_000_000, 1_800_000_000))
    return directory


def fake_backup(root, backup_id, method="physical", start="0/5000028", end="0/6000100", database="db"):
    path = root / database / backup_id
    (path / "data").mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({"method": method}))
    ranges = {"WAL-Ranges": [{"Timeline": 1, "Start-LSN": start, "End-LSN": end}]}
    (path / "data" / "backup_manifest").write_text(json.dumps(ranges))


def test_applying_wal_retention_prunes_below_the_oldest_kept_physical_backup(tmp_path):
    directory = fake_archive(tmp_path)
    fake_backup(tmp_path, "b-physical")
    fake_backup(tmp_path, "b-logical", method="logical")
    (directory / f"{seg(1)}.sha256").write_text("orphan\n")
    stale, fresh = directory / f".{seg(10)}.1.tmp", directory / f".{seg(10)}.2.tmp"
    stale.write_text("x")
    fresh.write_text("x")
    os.utime(stale, (1_000_000_000, 1_000_000_000))

    dry = apply_wal_retention(tmp_path, "db", ["b-physical", "b-logical"], dry_run=True)
    assert dry["delete_files"] == 3 and dry["deleted_files"] == 0 and (directory / seg(2)).exists()
    done = apply_wal_retention(tmp_path, "db", ["b-physical", "b-logical"])
    assert done["boundary"] == seg(5) and done["deleted_files"] == 3
    left = sorted(p.name for p in directory.iterdir())
    assert left[0] == f".{seg(10)}.2.tmp" and left[1] == seg(5)  # a running push's temp file stays
    assert not any(name.startswith((seg(2), seg(3), seg(4), seg(1))) for name in left)


def test_a_kept_backup_without_a_readable_start_stops_all_pruning(tmp_path):
    directory = fake_archive(tmp_path)
    fake_backup(tmp_path, "b-ok", start="0/8000028")
    fake_backup(tmp_path, "b-broken")
    (tmp_path / "db" / "b-broken" / "data" / "backup_manifest").write_text("{}")
    result = apply_wal_retention(tmp_path, "db", ["b-ok", "b-broken"])
    assert result["deleted_files"] == 0 and "b-broken" in result["reason"]
    assert (directory / seg(2)).exists()


def test_the_archive_check_reads_the_backups_wal_range_and_the_checksums(tmp_path):
    directory = fake_archive(tmp_path)
    fake_backup(tmp_path, "b", start="0/5000028", end="0/7000000")  # ends exactly at a boundary
    assert backup_wal_range(tmp_path / "db" / "b") == (Segment(1, 5), Segment(1, 6))
    now = datetime.fromtimestamp(1_800_000_030, UTC)
    ok = check_archive(tmp_path, "db", "b", now=now)
    assert ok.status == "ok" and ok.newest_segment == seg(9) and ok.rpo_seconds == 30
    with open(directory / seg(7), "r+b") as fh:
        fh.write(b"\x01")
    assert check_archive(tmp_path, "db", "b", now=now).corrupt == [
        f"{seg(7)}: sha256 differs from the one stored at archiving (the bytes changed)"
    ]
    (directory / seg(6)).unlink()
    assert check_archive(tmp_path, "db", "b", now=now).first_missing == seg(6)

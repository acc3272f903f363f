"""The backup and drill DAGs' run conf: unknown keys and wrong types refused, each named."""

from __future__ import annotations

import pytest

from opsdag.spec.run_conf import BackupConf, ConfRefused, DrillConf, check_conf


@pytest.mark.parametrize(
    ("model", "conf", "message"),
    [
        (
            DrillConf,
            {"target_conn_id": "x"},
            "target_conn_id: unknown key; allowed here: backup_id, recovery_target_time",
        ),
        (DrillConf, {"backupid": "a"}, "backupid: unknown key; did you mean 'backup_id'?"),
        (DrillConf, {"backup_id": 3}, "backup_id: must be a string, not 3"),
        (BackupConf, {"dry_run": True}, "dry_run: unknown key; allowed here: dry_run_retention"),
    ],
)
def test_bad_conf_is_refused_naming_the_field(model, conf, message) -> None:
    with pytest.raises(ConfRefused) as refused:
        check_conf(model, conf, "drill__demo-db")
    assert str(refused.value) == f"run conf refused:\n{message}"


def test_a_conf_with_every_error_lists_them_all() -> None:
    with pytest.raises(ConfRefused) as refused:
        check_conf(DrillConf, {"target_conn_id": "x", "jobs": 4}, "drill__demo-db")
    assert str(refused.value).count("unknown key") == 2


@pytest.mark.parametrize(
    "conf",
    [
        None,
        {},
        {"backup_id": None},
        {"backup_id": "20261129T020000Z-a0530a"},
        {"recovery_target_time": "latest"},
        {"recovery_target_time": "2026-11-30T02:15:00Z", "backup_id": None},
    ],
)
def test_what_the_form_and_rest_send_is_accepted(conf) -> None:
    assert isinstance(check_conf(DrillConf, conf, "drill__demo-db"), DrillConf)

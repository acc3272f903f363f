"""The sandbox's archive_command: quoted for postgresql.conf and the shell, pointing at the right archive."""

from __future__ import annotations

import pwd
import shlex
import sys
from pathlib import Path

import pytest

from opsdag.dev.sandbox.state import Layout
from opsdag.dev.sandbox.wal_archiving import archive_command, archive_root, archive_settings, runnable_by

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"


def test_the_command_spells_out_interpreter_plugins_and_storage_and_escapes_percent():
    command = archive_command("/usr/bin/python3.11", Path("/srv/back ups/100%"), "demo-db")
    assert command.endswith(" %p %f")
    body = command[: -len(" %p %f")].replace("%%", "%")
    assert shlex.split(body) == [
        f"PYTHONPATH={PLUGINS}",
        "/usr/bin/python3.11",
        "-s",
        "-m",
        "opsdag",
        "wal",
        "push",
        "--database",
        "demo-db",
        "--storage",
        "/srv/back ups/100%",
    ]
    assert "100%%" in command  # PostgreSQL would read a lone % as a placeholder


def test_the_archive_goes_where_the_backups_of_that_sandbox_go(tmp_path, monkeypatch):
    monkeypatch.setenv("OPSDAG_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("OPSDAG_BACKUPS_DIR", raising=False)
    assert archive_root(Layout(tmp_path / "state" / "sandbox")) == (tmp_path / "state" / "backups").resolve()
    assert archive_root(Layout(tmp_path / "elsewhere")) == tmp_path / "elsewhere" / "backups"
    assert archive_root(Layout(tmp_path / "elsewhere"), "file:///srv/b") == Path("/srv/b")
    monkeypatch.setenv("OPSDAG_BACKUPS_DIR", str(tmp_path / "b"))
    assert archive_root(Layout(tmp_path / "elsewhere")) == (tmp_path / "b").resolve()


def test_archiving_follows_the_demo_spec(tmp_path, monkeypatch):
    (tmp_path / "databases").mkdir()
    monkeypatch.setenv("OPSDAG_INCLUDE_DIR", str(tmp_path))
    assert archive_settings(Layout(tmp_path / "s"), None) == {}  # no demo-db.yaml: no archiving
    demo = Path(__file__).resolve().parents[2] / "include" / "databases" / "demo-db.yaml"
    (tmp_path / "databases" / "demo-db.yaml").write_text(demo.read_text().replace("60s", "30s"))
    settings = archive_settings(Layout(tmp_path / "s"), None)
    assert settings["archive_mode"] == "on" and settings["archive_timeout"] == "30s"
    assert "--database demo-db" in settings["archive_command"]


def test_an_interpreter_under_root_is_not_runnable_by_the_postgres_user():
    """The venv's python here is pyenv's, under /root (0700): the archiver could not start it."""
    try:
        postgres = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres OS user")
    ours = Path(sys.executable).resolve()
    if not str(ours).startswith("/root/") or Path("/root").stat().st_mode & 0o001:
        pytest.skip("this interpreter is not behind a closed /root")
    assert ours.is_file() and not runnable_by(ours, postgres)
    assert runnable_by(Path("/bin/sh"), postgres)

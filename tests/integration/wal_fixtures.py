"""A real PostgreSQL 15 archiving its WAL with ``opsdag wal push``, shared by the WAL and PITR tests.

The server is a module's own (archiving needs ``archive_mode = on`` from its start), run
as the ``postgres`` OS user when the tests run as root, with the sandbox's
``archive_command`` (``opsdag.dev.sandbox.wal_archiving``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pg_fixtures import target_for
from support.waiting import wait_for

from opsdag.backups import engine
from opsdag.backups.pg_server import as_user, hand_over, server_user
from opsdag.backups.storage import BackupStore
from opsdag.backups.wal_push import archive_dir
from opsdag.dev.sandbox.postgres import PostgresServer
from opsdag.dev.sandbox.wal_archiving import archive_command, archive_python

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"


@dataclass
class Archiving:
    server: PostgresServer
    root: Path  # the backups' root
    directory: Path  # <root>/<database>/wal
    python: str
    db: str

    def sql(self, text: str) -> str:
        return self.server.psql(text).strip()

    def switch(self) -> str:
        """Write something, switch to a new segment; the name of the segment just closed."""
        self.sql(
            "CREATE TABLE IF NOT EXISTS filler (x int); INSERT INTO filler SELECT generate_series(1, 100);"
        )
        return self.sql("SELECT pg_walfile_name(pg_switch_wal());")

    def wait_archived(self, name: str, timeout: float = 30) -> Path:
        return wait_for(
            lambda: (self.directory / name).exists() and (self.directory / name),
            timeout,
            what=f"{name} in {self.directory}",
        )

    def archiver(self) -> dict[str, str]:
        row = self.sql(
            "SELECT archived_count, failed_count, coalesce(last_failed_wal, '') FROM pg_stat_archiver;"
        )
        archived, failed, last_failed = row.split("|")
        return {"archived": int(archived), "failed": int(failed), "last_failed": last_failed}

    def push(self, source: Path, name: str, root: Path | None = None) -> subprocess.CompletedProcess:
        """The push as the archiver runs it: the server's OS user, its interpreter."""
        argv = [self.python, "-s", "-m", "opsdag", "wal", "push", "--database", self.db]
        argv += ["--storage", str(root or self.root), str(source), name]
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PLUGINS)}
        return subprocess.run(
            as_user(argv, server_user()), env=env, capture_output=True, text=True, timeout=60, cwd="/"
        )


@contextmanager
def archiving_server(keep: Path, db: str) -> Iterator[Archiving]:
    """A server archiving into ``<tmp>/backups/<db>/wal`` (its log copied to ``keep`` at the end)."""
    home = Path(tempfile.mkdtemp(prefix="opsdag-test-wal-"))
    os.chmod(home, 0o711)
    root = home / "backups"
    directory = archive_dir(root, db)
    directory.mkdir(parents=True)
    hand_over(directory, server_user())
    python = archive_python(server_user())
    settings = {
        "archive_mode": "on",
        "archive_command": archive_command(python, root, db),
        "archive_timeout": "60s",
        "max_connections": 20,
    }
    server = PostgresServer(home / "server", settings=settings)
    server.start()
    try:
        yield Archiving(server, root, directory, python, db)
    finally:
        server.stop()
        shutil.copy2(server.log_file, keep / "postgres.log")
        server.destroy()
        shutil.rmtree(home, ignore_errors=True)


def base_backup(archiving: Archiving, run_id: str, *, verify: bool = False) -> str:
    """A physical base backup of the server into the archive's backups root (published; verified if asked)."""
    store = BackupStore(archiving.root)
    backup_id = engine.backup_id_for(datetime.now(UTC), run_id)
    target = target_for(archiving.server, "postgres")
    options = engine.BackupOptions(method="physical", table_checksums=False)
    engine.take_backup(target, store, archiving.db, backup_id, options)
    engine.publish_manifest(store, archiving.db, backup_id)
    if verify:
        assert engine.verify(store, archiving.db, backup_id)["status"] == "verified"
    return backup_id


def archive_env(archiving: Archiving, tmp_path: Path, monkeypatch: Any) -> tuple[Path, Path]:
    """opsdag's directories for a DAG test on ``archiving``'s server: (include, state); its
    backups root is the server's archive root, so the backup DAG finds the archived WAL."""
    include = tmp_path / "include"
    (include / "databases").mkdir(parents=True)
    state = tmp_path / "state"
    monkeypatch.setenv("OPSDAG_INCLUDE_DIR", str(include))
    monkeypatch.setenv("OPSDAG_STATE_DIR", str(state))
    monkeypatch.setenv("OPSDAG_BACKUPS_DIR", str(archiving.root))
    monkeypatch.setenv("OPSDAG_REPORTS_DIR", str(state / "reports"))
    return include, state

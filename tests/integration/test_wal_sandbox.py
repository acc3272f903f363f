"""The sandbox's PostgreSQL archives the demo database's WAL (include/databases/demo-db.yaml).

Only the sandbox's PostgreSQL is started (``starters.start_postgres``, as ``up`` does), in a
temporary sandbox directory: as root it runs as the ``postgres`` OS user, so the archive
directory and the interpreter of its ``archive_command`` must be usable by that user.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.waiting import wait_for

from opsdag.backups.pg_server import server_user
from opsdag.backups.wal_push import archive_dir, read_checksum, sha256_file
from opsdag.dev.sandbox import starters
from opsdag.dev.sandbox.demo_database import DEMO_DATABASE, postgres_server
from opsdag.dev.sandbox.postgres import PostgresServer
from opsdag.dev.sandbox.state import Layout

pytestmark = pytest.mark.integration


@pytest.fixture
def sandbox_postgres(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Layout, PostgresServer]]:
    for name in ("OPSDAG_BACKUPS_DIR", "OPSDAG_INCLUDE_DIR"):  # the repository's demo-db.yaml
        monkeypatch.delenv(name, raising=False)
    root = Path(tempfile.mkdtemp(prefix="opsdag-test-sandbox-wal-"))
    os.chmod(root, 0o711)
    layout = Layout(root)
    server = postgres_server(layout)
    try:
        state: dict = {}
        starters.start_postgres(layout, state, lambda _msg: None)
        yield layout, server
    finally:
        server.destroy()
        shutil.rmtree(root, ignore_errors=True)


def test_the_sandbox_postgres_archives_the_demo_database(sandbox_postgres):
    layout, server = sandbox_postgres
    show = server.psql("SHOW archive_mode; SHOW archive_timeout; SHOW archive_command;").split("\n")
    assert show[:2] == ["on", "1min"]
    assert "-m opsdag wal push --database demo-db --storage" in show[2] and show[2].endswith(" %p %f")
    directory = archive_dir(layout.root / "backups", "demo-db")  # a sandbox outside the state dir

    server.psql("INSERT INTO orders (customer_id, product_id, quantity) VALUES (1, 1, 1);", DEMO_DATABASE)
    name = server.psql("SELECT pg_walfile_name(pg_switch_wal());").strip()
    wait_for(lambda: (directory / name).exists(), 30, what=f"{name} archived by the sandbox's server")

    assert read_checksum(directory, name) == sha256_file(directory / name)[1]
    if server_user() is not None:
        assert (directory / name).stat().st_uid == server_user().pw_uid  # the archiver wrote it
    failed = server.psql("SELECT failed_count FROM pg_stat_archiver;").strip()
    assert failed == "0", server.log_file.read_text()[-3000:]

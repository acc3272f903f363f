"""A temporary server started on restored data never archives into the real WAL archive.

A base backup carries ``postgresql.auto.conf``; if the DBA turned archiving on with ALTER
SYSTEM, that file would beat the temporary server's own config file and its archiver would
push segments, under names the live server also uses, into the real archive.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from opsdag.backups.tempserver import TempServer
from opsdag.dev.sandbox.postgres import PostgresServer

pytestmark = pytest.mark.integration


def test_archive_mode_set_by_alter_system_in_the_data_is_off_on_the_temporary_server(tmp_path: Path) -> None:
    source = PostgresServer(tmp_path / "source")
    source.start()
    try:
        source.psql("ALTER SYSTEM SET archive_mode = on;")
        source.psql("ALTER SYSTEM SET archive_command = 'exit 1';")
        data_dir = source.data_dir.resolve()
    finally:
        source.stop()
    assert "archive_mode = 'on'" in (data_dir / "postgresql.auto.conf").read_text()

    temporary = TempServer(data_dir, tmp_path / "run", major=15)
    temporary.start(timeout=60)
    try:
        with temporary.target("postgres", source.superuser).connect() as conn:
            assert conn.execute("SHOW archive_mode").fetchone()[0] == "off"
    finally:
        temporary.stop()
        source.destroy()

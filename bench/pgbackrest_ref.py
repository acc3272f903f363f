"""pgBackRest as the bench's reference for physical backups and restores (Debian's pgbackrest 2.45).

Its own repository, config, lock and log directories and stanza ``bench`` in
``<workdir>/pgbackrest``, owned by the server's OS user (pgBackRest runs as that user);
zstd level 3 and ``process-max=2`` as asked by issue 19. The bench server does not archive
WAL, so the stanza has ``archive-check=n``: the backup then waits for no archived segment
(what the timing compares is the copy itself; pg_basebackup streams its WAL instead).
A restore lays the files of the newest full backup into a fresh directory; starting a
server on it would need the archive, so it is timed without a start (the opsdag drill's
restore step includes starting its copy: see the figures' notes).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path


class PgBackRest:
    def __init__(self, workdir: Path, server, *, level: int = 3, processes: int = 2) -> None:
        self.home = workdir / "pgbackrest"
        self.server = server
        self.level = level
        self.processes = processes
        self.user = self._owner(server.data_dir)

    @staticmethod
    def _owner(path: Path) -> str:
        import pwd

        return pwd.getpwuid(path.stat().st_uid).pw_name

    @property
    def config(self) -> Path:
        return self.home / "pgbackrest.conf"

    def setup(self) -> None:
        """Config, passfile and stanza (made again each run: the repository starts empty)."""
        shutil.rmtree(self.home, ignore_errors=True)
        for sub in ("repo", "log", "lock", "spool"):
            (self.home / sub).mkdir(parents=True)
        socket_dir = self.server.data_dir.parent / "run"
        self.config.write_text(
            "[global]\n"
            f"repo1-path={self.home / 'repo'}\nrepo1-retention-full=1\n"
            f"log-path={self.home / 'log'}\nlock-path={self.home / 'lock'}\n"
            f"spool-path={self.home / 'spool'}\n"
            f"compress-type=zst\ncompress-level={self.level}\nprocess-max={self.processes}\n"
            "start-fast=y\narchive-check=n\nlog-level-console=warn\n\n"
            "[bench]\n"
            f"pg1-path={self.server.data_dir}\npg1-socket-path={socket_dir}\n"
            f"pg1-port={self.server.port}\npg1-user={self.server.superuser}\n"
        )
        passfile = self.home / "pgpass"
        passfile.write_text(f"*:*:*:{self.server.superuser}:{self.server.password}\n")
        passfile.chmod(0o600)
        shutil.chown(self.home, self.user, self.user)
        for path in self.home.rglob("*"):
            shutil.chown(path, self.user, self.user)
        self.run("stanza-create")

    def run(self, *args: str) -> float:
        """One pgbackrest command as the server's user; its wall time in seconds."""
        argv = ["runuser", "-u", self.user, "--", "env", f"PGPASSFILE={self.home / 'pgpass'}"]
        argv += ["pgbackrest", f"--config={self.config}", "--stanza=bench", *args]
        started = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        seconds = time.monotonic() - started
        if proc.returncode != 0:
            raise RuntimeError(
                f"pgbackrest {' '.join(args)} failed: {proc.stdout[-1500:]}{proc.stderr[-1500:]}"
            )
        return seconds

    def full_backup(self) -> float:
        return self.run("--type=full", "backup")

    def restore(self, into: Path) -> float:
        """Restore the newest backup into a fresh ``into``; seconds (the copy is removed afterwards)."""
        shutil.rmtree(into, ignore_errors=True)
        into.mkdir(parents=True)
        shutil.chown(into, self.user, self.user)
        try:
            return self.run(f"--pg1-path={into}", "restore")
        finally:
            shutil.rmtree(into, ignore_errors=True)

    def repo_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.home / "repo").rglob("*") if p.is_file())

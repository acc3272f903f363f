"""A Redis server (Debian's ``redis-server``) in a directory on a free loopback port: the broker.

The password is generated once and kept in a 0600 file; Redis reads it from its own config
file (0600), never from a command line. Nothing is persisted: a queued Celery message lives
as long as the server, which lives as long as the cluster.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import redis

from opsdag.dev.sandbox.processes import ProcessTable, atomic_write, free_port, log_tail, wait_until

NAME = "redis"
BINARY = "/usr/bin/redis-server"


class RedisServer:
    def __init__(self, directory: Path, table: ProcessTable) -> None:
        self.directory = directory
        self.table = table

    @property
    def password_file(self) -> Path:
        return self.directory / "password"

    @property
    def conf_file(self) -> Path:
        return self.directory / "redis.conf"

    @property
    def port(self) -> int:
        for line in self.conf_file.read_text().splitlines():
            if line.startswith("port "):
                return int(line.split()[1])
        raise RuntimeError(f"{self.conf_file} names no port")

    def url(self, db: int = 0) -> str:
        """The broker URL, password included: write it only to a 0600 file."""
        return f"redis://:{self.password_file.read_text().strip()}@127.0.0.1:{self.port}/{db}"

    def running(self) -> bool:
        record = self.table.read(NAME)
        return record is not None and ProcessTable.alive(record)

    def start(self, timeout: float = 30.0) -> None:
        if self.running():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.password_file.exists():
            atomic_write(self.password_file, secrets.token_urlsafe(24), mode=0o600)
        port = free_port()
        conf = [
            "bind 127.0.0.1",
            "protected-mode yes",
            f"port {port}",
            f"dir {self.directory}",
            'save ""',
            "appendonly no",
            "daemonize no",
            f"requirepass {self.password_file.read_text().strip()}",
        ]
        atomic_write(self.conf_file, "\n".join(conf) + "\n", mode=0o600)
        record = self.table.spawn(NAME, [BINARY, str(self.conf_file)])
        if not wait_until(lambda: self._answers() or not ProcessTable.alive(record), timeout, 0.1) or (
            not self._answers()
        ):
            raise RuntimeError(f"redis did not answer on port {port}:\n{log_tail(record.log)}")

    def _answers(self) -> bool:
        try:
            client = redis.Redis.from_url(self.url(), socket_timeout=1)
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False

    def stop(self) -> None:
        record = self.table.read(NAME)
        if record is not None:
            self.table.stop(record)

"""Wait in the triggerer until the WAL archive reaches a base backup's end segment.

``WalContinuityOperator`` defers here while the archive has no gap but does not yet hold
the backup's end segment (the server archives it at the latest ``archive_timeout`` after
the backup): no worker slot is held meanwhile. Each poll re-reads the archive
(``wal_archive.check_archive``, in a thread: it hashes segments); the event fires as soon
as the verdict is anything but ``waiting``, or at the deadline. The operator resumes and
decides again from the archive itself, so the event only says when to look.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

POLL_SECONDS = 2.0


class WalArchiveTrigger(BaseTrigger):
    """Fires when ``database``'s archive, under the store ``url``, stops ``waiting`` for ``backup_id``."""

    def __init__(
        self,
        *,
        url: str,
        conn_id: str | None,
        database: str,
        backup_id: str,
        deadline: float,
        poll: float = POLL_SECONDS,
    ) -> None:
        super().__init__()
        self.url = url
        self.conn_id = conn_id
        self.database = database
        self.backup_id = backup_id
        self.deadline = deadline
        self.poll = poll

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "url": self.url,
                "conn_id": self.conn_id,
                "database": self.database,
                "backup_id": self.backup_id,
                "deadline": self.deadline,
                "poll": self.poll,
            },
        )

    def status(self) -> dict[str, Any]:
        from opsdag.backups.storage import BackupStore
        from opsdag.backups.wal_archive import WalArchiveError, check_archive

        store = BackupStore(self.url, self.conn_id)
        root = store.local(store.root) if store.is_local else store.root
        try:
            verdict = check_archive(root, self.database, self.backup_id)
        except WalArchiveError as exc:
            return {"status": "error", "reason": str(exc)}
        return {"status": verdict.status, "reason": verdict.reason}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            state = await asyncio.to_thread(self.status)
            if state["status"] != "waiting" or time.time() >= self.deadline:
                yield TriggerEvent(state)
                return
            self.log.info("%s: polling again in %.0f s", state["reason"], self.poll)
            await asyncio.sleep(min(self.poll, max(0.0, self.deadline - time.time())))

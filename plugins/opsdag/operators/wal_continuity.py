"""The backup DAG's ``wal_continuity`` step: the archive holds every segment from the base backup on.

Fails at once, naming the segment, on a gap or a segment failing its sha256. While the
archive has no gap but has not reached the backup's end segment yet (the server archives
it at the latest ``archive_timeout`` after the backup), it defers to
``WalArchiveTrigger`` for at most ``archive_timeout`` + ``grace`` instead of holding a
worker slot, then decides again from the archive. The verdict is pure (``wal_continuity``).
"""

from __future__ import annotations

import time
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from opsdag.operators.database_base import DatabaseOperator


class WalContinuityOperator(DatabaseOperator):
    """The WAL archive holds every segment from this run's base backup on: the RPO, or the gap.

    :param grace: seconds to wait beyond ``archive_timeout`` for the backup's end segment.
    """

    def __init__(self, *, grace: float = 60.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.grace = grace

    def wal_root(self) -> Any:
        store = self.store()
        return store.local(store.root) if store.is_local else store.root

    def verdict(self, context: Any) -> Any:
        from opsdag.backups.wal_archive import WalArchiveError, check_archive

        try:
            return check_archive(self.wal_root(), self.database.name, self.backup_id(context))
        except WalArchiveError as exc:
            raise AirflowFailException(str(exc)) from exc

    def run(self, context: Any) -> dict[str, Any]:
        from opsdag.triggers.wal_archive import WalArchiveTrigger

        verdict = self.verdict(context)
        if verdict.status != "waiting":
            return self.decide(context, verdict, waited=None)
        timeout = self.timeout()
        self.log.info("%s: waiting up to %.0f s in the triggerer", verdict.reason, timeout)
        store = self.store()
        self.defer(
            trigger=WalArchiveTrigger(
                url=store.url,
                conn_id=self.database.backup.storage_conn_id,
                database=self.database.name,
                backup_id=self.backup_id(context),
                deadline=time.time() + timeout,
            ),
            method_name="execute_complete",
        )
        raise AssertionError("defer() returns only by raising")  # pragma: no cover

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """The archive is looked at again: the event only says when."""
        return self.decide(context, self.verdict(context), waited=self.timeout())

    def timeout(self) -> float:
        return self.database.backup.wal_archive.archive_timeout.total_seconds() + self.grace

    def decide(self, context: Any, verdict: Any, *, waited: float | None) -> dict[str, Any]:
        result = verdict.to_dict()
        if verdict.status == "waiting":
            result["reason"] = (
                f"{verdict.reason} after {waited or 0:.0f} s: the server's archiving is behind or failing "
                "(see pg_stat_archiver and the server log)"
            )
        if not verdict.ok:
            context["ti"].xcom_push(key="wal", value=result)
            raise AirflowFailException(result["reason"])
        self.log.info("%s", verdict.reason)
        return result

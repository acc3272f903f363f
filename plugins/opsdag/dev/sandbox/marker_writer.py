"""The sandbox's marker writer: one row in ``demo.opsdag_marker`` every few seconds.

It plays an application that writes all the time, so that a point-in-time drill of
demo-db has a truth to compare with (``drill.pitr_marker`` in include/databases/demo-db.yaml):
the restored copy must hold exactly the rows written up to the recovery target. Each row
is its own transaction, committed at once, ``written_at = clock_timestamp()``.

It connects with a libpq conninfo naming the server's passfile (no password on the
command line), reconnects when the server restarts, and stops by itself after
``--max-duration`` seconds, or on SIGTERM (``sandbox down``).

    python -m opsdag.dev.sandbox.marker_writer --dsn "host=... passfile=..." [--interval 5]
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time

TABLE = "opsdag_marker"
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    seq bigserial PRIMARY KEY,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""

log = logging.getLogger("opsdag.marker_writer")


def run(dsn: str, interval: float, max_duration: float, stop: threading.Event) -> int:
    """Write markers until ``stop`` or ``max_duration``; returns how many were written."""
    import psycopg

    deadline = time.monotonic() + max_duration
    written = 0
    conn = None
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
            conn.execute(f"INSERT INTO {TABLE} DEFAULT VALUES")
            written += 1
        except psycopg.Error as exc:
            log.warning("marker not written (%s); retrying", str(exc).strip().splitlines()[0])
            if conn is not None:
                conn.close()
            conn = None
        stop.wait(interval)
    if conn is not None:
        conn.close()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m opsdag.dev.sandbox.marker_writer", description=__doc__)
    parser.add_argument("--dsn", required=True, help="libpq conninfo (with passfile=, no password)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between markers (default 5)")
    parser.add_argument("--max-duration", type=float, default=6 * 3600.0, help="stop after this many seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("writing a marker every %g s into %s", args.interval, TABLE)
    written = run(args.dsn, args.interval, args.max_duration, stop)
    log.info("stopped after %d markers", written)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A steady, bounded load generator for the sandbox (through HAProxy, loopback only).

Sends ``--rate`` requests per second (open loop: a slow or failing version does not
slow the schedule down; when every worker is busy the tick is counted as skipped) for
at most ``--max-duration`` seconds, and counts answers per version (``X-Version``) and
per status. Every ``--interval`` seconds it atomically rewrites ``--counts-file``::

    {"updated_at": <unix time>, "total": N, "by_version": {"1.0.0": N},
     "by_status": {"200": N, "500": N, "error": N},
     "by_version_status": {"1.0.0": {"200": N}}, "skipped": N,
     "recent": [{"t": <unix time>, "by_version": {...}, "by_status": {...}}, ...]}

Counts are cumulative since start; ``recent`` holds per-second buckets of the last 30 s.
A request that got no HTTP answer counts under version ``none`` and status ``error``; an
answer without ``X-Version`` (e.g. HAProxy's own 503) under version ``none``.

With ``--preview-url``, a share of the ticks goes to blue-green's preview route instead
(evenly spread: a share of 0.05 is every 20th request). The share is read at run time
from ``--control-file`` (``{"preview_share": 0.05}``, rewritten by the sandbox when the
preview route opens or closes). The top-level counts are the main route's only; the
preview's are apart, under ``"preview": {"url", "share", "total", "by_version", ...}``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import signal
import sys
import threading
import time
import urllib.parse
from collections import Counter, deque
from pathlib import Path

NO_VERSION = "none"
ERROR_STATUS = "error"
RECENT_SECONDS = 30
# Reopen keep-alive connections idle longer than this (HAProxy keeps them 30 s).
IDLE_RECONNECT_S = 5.0
MAIN = "main"
PREVIEW = "preview"
# How often the control file is looked at (a new preview share applies within this).
CONTROL_POLL_S = 0.2


class Tally:
    """Thread-safe cumulative counts plus per-second buckets."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_version: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.by_version_status: dict[str, Counter[str]] = {}
        self.skipped = 0
        self._recent: deque[dict] = deque(maxlen=RECENT_SECONDS)
        self._bucket_second = int(time.time())
        self._bucket_version: Counter[str] = Counter()
        self._bucket_status: Counter[str] = Counter()

    def add(self, version: str, status: str) -> int:
        """Count one answer; returns how many of that status there are now."""
        with self._lock:
            self._roll(int(time.time()))
            self.by_version[version] += 1
            self.by_status[status] += 1
            self.by_version_status.setdefault(version, Counter())[status] += 1
            self._bucket_version[version] += 1
            self._bucket_status[status] += 1
            return self.by_status[status]

    def skip(self) -> None:
        with self._lock:
            self.skipped += 1

    def _roll(self, second: int) -> None:
        if second == self._bucket_second:
            return
        self._recent.append(
            {
                "t": self._bucket_second + 1,
                "by_version": dict(self._bucket_version),
                "by_status": dict(self._bucket_status),
            }
        )
        self._bucket_second = second
        self._bucket_version = Counter()
        self._bucket_status = Counter()

    def snapshot(self) -> dict:
        with self._lock:
            self._roll(int(time.time()))
            return {
                "total": sum(self.by_version.values()),
                "by_version": dict(self.by_version),
                "by_status": dict(self.by_status),
                "by_version_status": {v: dict(c) for v, c in self.by_version_status.items()},
                "skipped": self.skipped,
                "recent": list(self._recent),
            }


class LoadGenerator:
    def __init__(
        self,
        url: str,
        counts_file: Path,
        rate: float,
        max_duration: float,
        workers: int = 16,
        timeout: float = 5.0,
        interval: float = 0.5,
        preview_url: str | None = None,
        control_file: Path | None = None,
    ) -> None:
        if not 0 < rate <= 1000:
            raise ValueError(f"rate must be between 0 and 1000 requests/s, got {rate}")
        self.url = url
        self.preview_url = preview_url
        self.targets = {MAIN: _loopback(url)}
        if preview_url is not None:
            self.targets[PREVIEW] = _loopback(preview_url)
        self.control_file = control_file
        self.preview_share = 0.0
        self._control_mtime: float | None = None
        self.counts_file = counts_file
        self.rate = rate
        self.max_duration = max_duration
        self.workers = workers
        self.timeout = timeout
        self.interval = interval
        self.tally = Tally()
        self.preview_tally = Tally()
        self.stop = threading.Event()
        self._jobs: queue.Queue[str] = queue.Queue(maxsize=workers)
        self.started_at = time.time()

    def run(self) -> None:
        threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(self.workers)]
        threads.append(threading.Thread(target=self._writer, daemon=True))
        threads.append(threading.Thread(target=self._control, daemon=True))
        for thread in threads:
            thread.start()
        start = time.monotonic()
        deadline = start + self.max_duration
        tick = 0
        credit = 0.0  # preview requests owed: the share accumulates, one request per whole unit
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= deadline:
                break
            due = start + tick / self.rate
            if due > now:
                self.stop.wait(due - now)
                continue
            tick += 1
            if due < now - 1.0:
                # Fell more than a second behind (machine paused): do not burst to catch up.
                start = now - tick / self.rate
            credit = (
                credit + self.preview_share if self.preview_share > 0 and PREVIEW in self.targets else 0.0
            )
            route = MAIN
            if credit >= 1.0:
                credit -= 1.0
                route = PREVIEW
            try:
                self._jobs.put_nowait(route)
            except queue.Full:
                self.tally.skip()
        self.stop.set()
        self.write_counts()

    def _worker(self) -> None:
        conns: dict[str, http.client.HTTPConnection] = {}
        last_used: dict[str, float] = {}
        while not self.stop.is_set():
            try:
                route = self._jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            host, port, path = self.targets[route]
            tally = self.tally if route == MAIN else self.preview_tally
            conn = conns.pop(route, None)
            if conn is not None and time.monotonic() - last_used.get(route, 0.0) > IDLE_RECONNECT_S:
                # HAProxy may be closing an idle keep-alive connection just now: a request
                # sent on it would fail without the server being at fault.
                conn.close()
                conn = None
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
            try:
                conn.request("GET", path, headers={"User-Agent": "opsdag-loadgen"})
                resp = conn.getresponse()
                resp.read()
                tally.add(resp.getheader("X-Version") or NO_VERSION, str(resp.status))
                if resp.will_close:
                    conn.close()
                else:
                    conns[route] = conn
            except (OSError, http.client.HTTPException) as exc:
                errors = tally.add(NO_VERSION, ERROR_STATUS)
                if errors <= 20 or errors % 100 == 0:
                    print(f"loadgen: {route} request failed ({errors} so far): {exc!r}", flush=True)
                conn.close()
            last_used[route] = time.monotonic()

    def _control(self) -> None:
        """Follow the control file: the preview share changes at run time."""
        while not self.stop.wait(CONTROL_POLL_S):
            self.read_control()

    def read_control(self) -> None:
        if self.control_file is None:
            return
        try:
            mtime = self.control_file.stat().st_mtime
            if mtime == self._control_mtime:
                return
            share = float(json.loads(self.control_file.read_text()).get("preview_share") or 0.0)
        except (OSError, ValueError, TypeError, AttributeError):
            return  # missing or half-written: keep the share in force
        self._control_mtime = mtime
        if share != self.preview_share:
            print(f"loadgen: preview share {share:g}", flush=True)
        self.preview_share = min(max(share, 0.0), 1.0)

    def _writer(self) -> None:
        while not self.stop.wait(self.interval):
            self.write_counts()

    def write_counts(self) -> None:
        data = {
            "url": self.url,
            "rate": self.rate,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "updated_at": time.time(),
            "running": not self.stop.is_set(),
            **self.tally.snapshot(),
        }
        if self.preview_url is not None:
            preview = self.preview_tally.snapshot()
            preview.pop("skipped")
            data[PREVIEW] = {"url": self.preview_url, "share": self.preview_share, **preview}
        tmp = self.counts_file.with_name(f".{self.counts_file.name}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.counts_file)


def _loopback(url: str) -> tuple[str, int, str]:
    """(host, port, path) of a loopback http URL; anything else is refused."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "http" or parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the load generator only targets loopback http URLs, not {url!r}")
    return parsed.hostname, parsed.port or 80, parsed.path or "/"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m opsdag.dev.sandbox.loadgen", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--counts-file", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second (default 50)")
    parser.add_argument(
        "--max-duration", type=float, default=6 * 3600, help="seconds before it stops by itself"
    )
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between counts-file writes")
    parser.add_argument("--preview-url", help="blue-green's preview route (gets the control file's share)")
    parser.add_argument(
        "--control-file", type=Path, help='JSON {"preview_share": 0.05}, followed at run time'
    )
    args = parser.parse_args(argv)
    gen = LoadGenerator(
        args.url,
        args.counts_file,
        args.rate,
        args.max_duration,
        args.workers,
        args.timeout,
        args.interval,
        preview_url=args.preview_url,
        control_file=args.control_file,
    )
    gen.read_control()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: gen.stop.set())
    print(f"loadgen: {args.rate:g} req/s to {args.url} for at most {args.max_duration:g} s", flush=True)
    gen.run()
    print("loadgen: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Row counts and sha256 of every table's COPY data, read from pg_dump's files as it writes them.

Why: the proof that a restore is identical used to be a second scan of every table on the
server, in the dump's snapshot, while pg_dump ran. On a 2-core machine that scan competes
with pg_dump's own server process and its compression for the same cores (the backup task
measured 1.26-1.36x pg_dump by hand). pg_dump already reads every row once and writes it
to ``<dumpId>.dat[.gz]`` as COPY text; this module reads those files while they grow,
inflates them (gzip written by pg_dump; plain ``.dat`` with ``--compress=0``), and counts
the lines and hashes the text as it streams past. Nothing is read twice from the server.

What is hashed: the table's COPY text exactly as ``COPY t (cols) TO STDOUT`` gave it to
pg_dump, without the ``\\.`` end-of-data line pg_dump appends in directory format. The
method is ``copy-sha256-v1`` (see stats.py): a drill recomputes it from the restored
table with the same COPY command and session settings.

Measured on this machine (pgbench scale 70, one 684 MB table): writing the data
uncompressed (``--compress=0``) and compressing it afterwards is *slower* than pg_dump's
own gzip (the 684 MB write alone costs more than deflate saves), so pg_dump keeps
compressing and this reader inflates a copy of the stream in memory instead.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

END_OF_DATA = b"\\.\n\n\n"  # what pg_dump's directory format writes after a table's COPY text
CHUNK = 1 << 20
POLL_SECONDS = 0.02


class DumpDigestError(RuntimeError):
    """A data file did not end as a complete pg_dump data file (truncated, bad gzip, no end line)."""


@dataclass(frozen=True)
class DataDigest:
    """One data file's content: COPY text lines (rows), its sha256 and length in bytes."""

    file: str
    rows: int
    sha256: str
    bytes: int


@dataclass
class _Follower:
    """The reading state of one data file: where we are, the inflater, the running hash."""

    path: Path
    gzip: bool
    offset: int = 0
    inflater: zlib._Decompress | None = None
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)
    held: bytes = b""  # the last bytes seen: maybe the end-of-data line, hashed only if not
    rows: int = 0
    length: int = 0
    last: bytes = b""  # the last byte hashed: a complete COPY text ends with a newline

    def __post_init__(self) -> None:
        if self.gzip:
            self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip header and trailer

    def read_available(self, limit: int = 16 * CHUNK) -> int:
        """Read what has been written since last time (up to ``limit`` bytes); bytes read."""
        got = 0
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            while got < limit:
                chunk = fh.read(CHUNK)
                if not chunk:
                    break
                got += len(chunk)
                self.offset += len(chunk)
                if self.inflater is None:
                    self._feed(chunk)
                    continue
                while True:  # bounded output: highly compressible data inflates 30-50x
                    out = self.inflater.decompress(chunk, 8 * CHUNK)
                    self._feed(out)
                    chunk = self.inflater.unconsumed_tail
                    if not chunk and len(out) < 8 * CHUNK:
                        break
        return got

    def _feed(self, text: bytes) -> None:
        """Hash and count all but the last few bytes seen (they may be the end-of-data line)."""
        keep = len(END_OF_DATA)
        if len(text) < keep:
            data = self.held + text
            self._take(data, len(data) - keep)
            self.held = data[-keep:] if len(data) >= keep else data
            return
        self._take(self.held, len(self.held))
        self._take(text, len(text) - keep)
        self.held = text[-keep:]

    def _take(self, data: bytes, end: int) -> None:
        if end <= 0:
            return
        self.hasher.update(memoryview(data)[:end])
        self.last = data[end - 1 : end]
        self.rows += data.count(b"\n", 0, end)
        self.length += end

    def finish(self) -> DataDigest:
        """The digest once the writer is done: the stream whole, ending with ``\\.`` (pg_dump 15)
        or at least with a complete row."""
        self.read_available(limit=1 << 62)
        if self.inflater is not None:
            if not self.inflater.eof:
                raise DumpDigestError(f"{self.path.name}: the gzip stream is truncated")
            # pg_dump writes one gzip member per file; opsdag never appends one.
            if self.inflater.unused_data:
                raise DumpDigestError(f"{self.path.name}: data after the end of the gzip stream")
        if self.held != END_OF_DATA:  # pg_dump versions without the end line: all of it is COPY text
            self._take(self.held, len(self.held))
            if self.length and self.last != b"\n":
                raise DumpDigestError(f"{self.path.name}: ends inside a row (no end-of-data line)")
        return DataDigest(self.path.name, self.rows, self.hasher.hexdigest(), self.length)


def _data_file(name: str) -> str | None:
    """``3358`` for ``3358.dat`` / ``3358.dat.gz``; None for toc.dat, blobs and the rest."""
    for suffix in (".dat.gz", ".dat"):
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            return stem if stem.isdigit() else None
    return None


def follow(
    directory: Path, writer_done: Callable[[], bool], poll: float = POLL_SECONDS
) -> dict[int, DataDigest]:
    """Digest every table data file pg_dump writes into ``directory``, as it writes them.

    Returns ``{dumpId: digest}`` once ``writer_done()`` is true and every file is read to its
    end. Runs in the calling thread (hashlib and zlib release the GIL while they work).
    Which files changed, and which pg_dump has closed (complete: finished at once), comes
    from inotify; without it (not Linux), every open file is read again on each poll.
    """
    followers: dict[int, _Follower] = {}
    digests: dict[int, DataDigest] = {}
    events: _DirEvents | None = None
    backlog: set[int] = set()  # files with more to read than one pass reads
    while True:
        done = writer_done()  # read before the last pass: nothing is written after it
        changed: set[int] = set()
        closed: set[int] = set()
        if events is None and directory.is_dir():
            events = _DirEvents.open(directory)
            changed |= _scan(directory, followers, digests)  # what was there before the watch
        if events is not None and events.fd >= 0:
            for name, mask in events.read(0 if (backlog or done) else poll):
                stem = _data_file(name)
                if stem is None or int(stem) in digests:
                    continue
                dump_id = int(stem)
                if dump_id not in followers:
                    followers[dump_id] = _Follower(directory / name, name.endswith(".gz"))
                changed.add(dump_id)
                if mask & _IN_CLOSE_WRITE:
                    closed.add(dump_id)
        else:
            changed |= _scan(directory, followers, digests) | set(followers)
        if done:  # pg_dump has exited: every file is complete
            if events is not None:
                events.close()
            _scan(directory, followers, digests)
            digests.update({dump_id: f.finish() for dump_id, f in followers.items()})
            return dict(sorted(digests.items()))
        backlog = {i for i in changed | backlog if i in followers and followers[i].read_available() >= _PASS}
        for dump_id in closed - backlog:  # closed by pg_dump and read to its end
            digests[dump_id] = followers.pop(dump_id).finish()
        if events is None or events.fd < 0:
            time.sleep(poll if not backlog else 0)


_PASS = 16 * CHUNK  # read_available's default limit: one pass over a file


def _scan(directory: Path, followers: dict[int, _Follower], digests: dict[int, DataDigest]) -> set[int]:
    """Follow the data files in ``directory`` not followed yet; their dump ids."""
    new = set()
    if not directory.is_dir():
        return new
    with os.scandir(directory) as entries:
        for entry in entries:
            stem = _data_file(entry.name)
            if stem is not None and int(stem) not in followers and int(stem) not in digests:
                followers[int(stem)] = _Follower(Path(entry.path), entry.name.endswith(".gz"))
                new.add(int(stem))
    return new


_IN_MODIFY, _IN_CLOSE_WRITE, _IN_CREATE = 0x2, 0x8, 0x100


class _DirEvents:
    """inotify on one directory (Linux, through libc): names created, written and closed."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def open(cls, directory: Path) -> _DirEvents:
        """A watch on ``directory``; ``fd`` is -1 where inotify is not available."""
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd < 0:
                return cls(-1)
            mask = _IN_MODIFY | _IN_CLOSE_WRITE | _IN_CREATE
            if libc.inotify_add_watch(fd, os.fsencode(directory), mask) < 0:
                os.close(fd)
                return cls(-1)
            return cls(fd)
        except (OSError, AttributeError):
            return cls(-1)

    def read(self, timeout: float) -> list[tuple[str, int]]:
        """The events that arrived (waiting up to ``timeout`` seconds for the first)."""
        import select
        import struct

        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        out, pos = [], 0
        while pos + 16 <= len(data):
            _wd, mask, _cookie, length = struct.unpack_from("iIII", data, pos)
            name = data[pos + 16 : pos + 16 + length].rstrip(b"\0").decode("utf-8", "replace")
            out.append((name, mask))
            pos += 16 + length
        return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Watcher:
    """``follow`` in a background thread: ``start()``, then ``result()`` after pg_dump exits."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._writer_done = threading.Event()
        self._stop = False
        self._result: dict[int, DataDigest] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="dump-digest", daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._result = follow(self.directory, self._writer_done.is_set)
        except BaseException as exc:  # reported by result()
            self._error = exc

    def writer_finished(self) -> None:
        self._writer_done.set()

    def abandon(self) -> None:
        """pg_dump failed: stop reading, keep no result, raise nothing."""
        self._writer_done.set()
        self._thread.join(timeout=60)

    def result(self) -> dict[int, DataDigest]:
        """Tell the reader pg_dump is done; wait for the last bytes; the digests (or the error)."""
        self._writer_done.set()
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

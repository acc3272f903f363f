"""Reading pg_dump's data files while they are written: rows, sha256, and incomplete files refused."""

from __future__ import annotations

import gzip
import hashlib
import threading
import time
from pathlib import Path

import pytest

from opsdag.backups.dump_digest import END_OF_DATA, DumpDigestError, Watcher, follow

COPY_TEXT = b"".join(b"%d\tvalue %d\t\\\\ back\\tslash\n" % (n, n) for n in range(200_000))


def write_slowly(path: Path, data: bytes, pieces: int = 40, pause: float = 0.005) -> None:
    """Write ``data`` in pieces, as pg_dump's worker does, flushing each."""
    step = len(data) // pieces + 1
    with open(path, "wb") as fh:
        for start in range(0, len(data), step):
            fh.write(data[start : start + step])
            fh.flush()
            time.sleep(pause)


def test_a_gzip_file_read_while_it_grows_gives_the_copy_texts_rows_and_sha256(tmp_path):
    compressed = gzip.compress(COPY_TEXT + END_OF_DATA, compresslevel=6)
    watcher = Watcher(tmp_path).start()
    writer = threading.Thread(target=write_slowly, args=(tmp_path / "3358.dat.gz", compressed))
    writer.start()
    writer.join()
    (tmp_path / "toc.dat").write_bytes(b"not data")
    [(dump_id, digest)] = watcher.result().items()
    assert dump_id == 3358
    assert digest.rows == 200_000 and digest.bytes == len(COPY_TEXT)
    assert digest.sha256 == hashlib.sha256(COPY_TEXT).hexdigest()


def test_plain_files_and_empty_tables(tmp_path):
    (tmp_path / "10.dat").write_bytes(COPY_TEXT + END_OF_DATA)
    (tmp_path / "11.dat.gz").write_bytes(gzip.compress(END_OF_DATA))
    (tmp_path / "blob_5.dat").write_bytes(b"large object, not a table")
    digests = follow(tmp_path, lambda: True)
    assert set(digests) == {10, 11}
    assert digests[10].sha256 == hashlib.sha256(COPY_TEXT).hexdigest()
    assert (digests[11].rows, digests[11].sha256) == (0, hashlib.sha256(b"").hexdigest())


def test_a_file_without_the_end_line_is_all_copy_text(tmp_path):
    """In case a pg_dump version stops writing ``\\.``: whole rows are still complete."""
    (tmp_path / "5.dat.gz").write_bytes(gzip.compress(COPY_TEXT))
    digest = follow(tmp_path, lambda: True)[5]
    assert (digest.rows, digest.sha256) == (200_000, hashlib.sha256(COPY_TEXT).hexdigest())


def test_one_byte_reads_hold_back_the_end_of_data_line(tmp_path):
    """The end line may arrive split over several reads: it is never hashed."""
    path = tmp_path / "7.dat"
    text = b"1\ta\n2\tb\n" + END_OF_DATA
    done = threading.Event()

    def writer() -> None:
        with open(path, "wb") as fh:
            for byte in text:
                fh.write(bytes([byte]))
                fh.flush()
                time.sleep(0.002)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    digests = follow(tmp_path, done.is_set, poll=0.001)
    thread.join()
    assert (digests[7].rows, digests[7].sha256) == (2, hashlib.sha256(b"1\ta\n2\tb\n").hexdigest())


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("1.dat.gz", gzip.compress(COPY_TEXT + END_OF_DATA)[:-100], "gzip stream is truncated"),
        ("3.dat", COPY_TEXT[:-7], "ends inside a row"),
        ("4.dat.gz", gzip.compress(END_OF_DATA) + gzip.compress(b"x"), "after the end of the gzip stream"),
    ],
)
def test_an_incomplete_data_file_is_refused(tmp_path, name, content, problem):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DumpDigestError, match=problem):
        follow(tmp_path, lambda: True)


def test_many_tables_each_finished_when_pg_dump_closes_its_file(tmp_path):
    """A database with hundreds of tables: each file is digested once closed (inotify), not
    re-read on every poll until pg_dump exits."""
    from opsdag.backups.dump_digest import _DirEvents

    events = _DirEvents.open(tmp_path)
    assert events.fd >= 0, "inotify is available on Linux"
    events.close()
    done = threading.Event()

    def writer() -> None:
        for n in range(300):
            text = b"".join(b"%d\trow\n" % r for r in range(n)) + END_OF_DATA
            with open(tmp_path / f"{1000 + n}.dat.gz", "wb") as fh:
                fh.write(gzip.compress(text))
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    digests = follow(tmp_path, done.is_set)
    thread.join()
    assert len(digests) == 300
    assert all(digests[1000 + n].rows == n for n in range(300))

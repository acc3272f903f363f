"""PostgreSQL's WAL file names and positions, as pure functions (no I/O, no Airflow).

A WAL segment is named ``TTTTTTTTXXXXXXXXYYYYYYYY``: timeline, then the segment number
split in two (``XXXXXXXX`` counts 4 GiB "log ids", ``YYYYYYYY`` the segments inside one).
How many segments a log id holds depends on the cluster's ``wal_segment_size`` (16 MiB by
default: ``00`` to ``FF``), so turning a name into a number needs that size. An LSN such as
``0/2000028`` is a byte position in the WAL; its segment is ``lsn // segment_size``.

The archive also receives a few other files, which are kept but are not segments: timeline
history files (``00000002.history``), backup history files
(``000000010000000000000002.00000028.backup``) and ``.partial`` segments (left by a
promotion). Anything else is not a name PostgreSQL archives, and is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
_SEGMENT = re.compile(r"^[0-9A-F]{24}$")
_OTHER = re.compile(r"^(?:[0-9A-F]{24}\.partial|[0-9A-F]{24}\.[0-9A-F]{8}\.backup|[0-9A-F]{8}\.history)$")
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


class WalNameError(ValueError):
    """Not a WAL file name or position; the message says which and what one looks like."""


def is_segment(name: str) -> bool:
    """A full WAL segment (24 hex digits): what continuity is checked on."""
    return bool(_SEGMENT.match(name))


def is_archivable(name: str) -> bool:
    """A file name PostgreSQL's archiver hands to ``archive_command`` as ``%f``."""
    return bool(_SEGMENT.match(name) or _OTHER.match(name))


def check_segment_size(size: int) -> int:
    """``wal_segment_size`` must be a power of two from 1 MiB to 1 GiB (initdb's rule)."""
    if size < 1 << 20 or size > 1 << 30 or size & (size - 1):
        raise WalNameError(f"{size} bytes is not a WAL segment size: a power of two from 1 MiB to 1 GiB")
    return size


@dataclass(frozen=True, order=True)
class Segment:
    """One WAL segment: its timeline and number (ordered by timeline, then number)."""

    timeline: int
    number: int
    segment_size: int = DEFAULT_SEGMENT_SIZE

    @property
    def name(self) -> str:
        per_log = 0x100000000 // self.segment_size
        return f"{self.timeline:08X}{self.number // per_log:08X}{self.number % per_log:08X}"

    def __str__(self) -> str:
        return self.name


def parse_segment(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> Segment:
    """``000000010000000000000002`` -> Segment(timeline 1, number 2)."""
    if not is_segment(name):
        raise WalNameError(
            f"{name!r} is not a WAL segment name (24 hex digits, like 000000010000000000000002)"
        )
    check_segment_size(segment_size)
    per_log = 0x100000000 // segment_size
    log, seg = int(name[8:16], 16), int(name[16:24], 16)
    if seg >= per_log:
        raise WalNameError(f"{name!r} cannot exist with {segment_size}-byte segments")
    return Segment(int(name[:8], 16), log * per_log + seg, segment_size)


def parse_lsn(text: str) -> int:
    """``0/2000028`` -> the byte position 0x2000028."""
    match = _LSN.match(text.strip())
    if not match:
        raise WalNameError(f"{text!r} is not an LSN (two hex numbers, like 0/2000028)")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def segment_of(lsn: int | str, timeline: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> Segment:
    """The segment holding byte ``lsn`` of ``timeline``."""
    position = parse_lsn(lsn) if isinstance(lsn, str) else lsn
    return Segment(timeline, position // check_segment_size(segment_size), segment_size)

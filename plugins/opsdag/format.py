"""Numbers in words, the one way every report, note and Slack message writes them.

A missing figure reads ``no data``, never 0: a canary without data was not healthy.
"""

from __future__ import annotations

import math
import unicodedata

NO_DATA = "no data"


def number(value: float | None) -> str:
    """A figure as people read it: ``0.081``, ``2``, ``1.2e-05``, ``inf``; None is ``no data``."""
    if value is None:
        return NO_DATA
    return f"{value:.4g}"


def percent(ratio: float | None) -> str:
    """A ratio as a percentage without rounding 99.999 % up to 100 %; None is ``no data``."""
    if ratio is None:
        return NO_DATA
    text = f"{ratio * 100:.3f}".rstrip("0").rstrip(".")
    return f"{text} %"


def latency(seconds: float | None) -> str:
    """``850 ms``, ``1.2 s``."""
    if seconds is None:
        return NO_DATA
    if abs(seconds) < 1:
        return f"{seconds * 1000:.3g} ms"
    return f"{seconds:.3g} s"


def rate(per_second: float | None, unit: str = "req/s") -> str:
    """``48.2 req/s``, ``120 req/s``."""
    if per_second is None:
        return NO_DATA
    return f"{per_second:.0f} {unit}" if per_second >= 100 else f"{per_second:.3g} {unit}"


def duration(seconds: float | None) -> str:
    """``12 ms``, ``0.4 s``, ``2.8 s``, ``41 s``, ``2 min 14 s``, ``1 h 3 min``; None is ``no data``.

    Under 10 s a tenth of a second is shown (a backup or a rollback that short is worth it),
    under 0.1 s milliseconds.
    """
    if seconds is None or not math.isfinite(seconds):
        return NO_DATA
    if 0 < seconds < 0.1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{max(seconds, 0.0):.1f} s"
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def size(n_bytes: float | None) -> str:
    """``512 B``, ``1.1 GB`` (powers of 1000, as disks and object stores count)."""
    if n_bytes is None:
        return NO_DATA
    value = float(n_bytes)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover (the loop returns at TB)


def plain_text(text: str | None) -> str:
    """User text made safe to show: control and bidirectional-override characters dropped.

    Line breaks and tabs become spaces. Escaping for Markdown or Slack is the renderer's
    job; this only removes what no renderer can show honestly.
    """
    if not text:
        return ""
    kept = []
    for ch in text:
        if ch in "\n\r\t":
            kept.append(" ")
        elif unicodedata.category(ch) in ("Cc", "Cf"):
            continue  # controls, and format characters such as U+202E (right-to-left override)
        else:
            kept.append(ch)
    return "".join(kept).strip()

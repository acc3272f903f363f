"""Reading what a Docker engine streams back from a build or a push (docker-py, decoded).

docker-py's ``APIClient.build(..., decode=True)`` and ``push(..., stream=True, decode=True)``
yield one dict per JSON line of the engine, as it arrives. A failure is such a line
(``{"errorDetail": {"message": ...}, "error": ...}``), not an exception: the readers here
turn it into ``BuildFailed`` with the engine's own text. The build's text (``stream``)
comes in pieces that do not follow line ends (``"Step 1/2 : FROM scratch"`` then ``"\\n"``):
it is logged line by line, each line once complete. A push's progress bars are not
logged, its status lines are (``<layer>: Pushed``, ``<tag>: digest: ...``), and its digest
is the final ``{"aux": {"Tag", "Digest", "Size"}}`` line's.

Pure functions of an iterable of dicts and a logger: unit-tested with lists.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any


class BuildFailed(RuntimeError):
    """The engine or the registry refused a build, tag, push or check; the text is theirs."""


def engine_error(line: dict[str, Any]) -> str | None:
    """The engine's error text of a stream line, or ``None`` for any other line."""
    if "errorDetail" in line or "error" in line:
        detail = line.get("errorDetail") or {}
        return str(detail.get("message") or line.get("error") or detail)
    return None


def engine_lines(lines: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """docker-py's decoded stream; a connection that breaks midway is the build's failure."""
    from requests.exceptions import RequestException

    try:
        yield from lines
    except RequestException as error:
        raise BuildFailed(f"the connection to the Docker engine broke: {error}") from error


def read_build_stream(lines: Iterable[dict[str, Any]], logger: logging.Logger) -> str:
    """Log a build's ``stream`` text line by line as it arrives; the built image's id.
    ``BuildFailed`` with the engine's text on an ``errorDetail``/``error`` line."""
    pending = ""
    image_id = None
    for line in lines:
        if (error := engine_error(line)) is not None:
            if pending.strip():
                logger.info("%s", pending.rstrip())
            raise BuildFailed(error)
        pending += line.get("stream", "")
        *complete, pending = pending.split("\n")
        for text in complete:
            if text.strip():
                logger.info("%s", text.rstrip())
        image_id = (line.get("aux") or {}).get("ID", image_id)
    if pending.strip():
        logger.info("%s", pending.rstrip())
    if not image_id:
        raise BuildFailed("the engine ended the build without an image id (no aux.ID line)")
    return image_id


def read_push_stream(lines: Iterable[dict[str, Any]], logger: logging.Logger) -> str:
    """Log a push's status lines (not the progress bars); the digest of its final ``aux`` line.
    ``BuildFailed`` with the engine's text on an ``errorDetail``/``error`` line."""
    digest = None
    for line in lines:
        if (error := engine_error(line)) is not None:
            raise BuildFailed(error)
        if "aux" in line and "Digest" in (line["aux"] or {}):
            digest = line["aux"]["Digest"]
        elif line.get("status") and not line.get("progress"):
            logger.info("%s", f"{line['id']}: {line['status']}" if line.get("id") else line["status"])
    if not digest:
        raise BuildFailed("the push ended without a digest (no aux.Digest line)")
    return digest

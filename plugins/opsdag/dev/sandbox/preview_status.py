"""Blue-green's preview route as ``status`` shows it: where it listens, what it reaches, its answers.

Read from the fleet's state, HAProxy's preview backend rows and the load generator's
counts (its ``preview`` part); nothing here changes anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PreviewStatus:
    """The preview route: open or not, the load generator's share for it, the canary ports it reaches."""

    url: str | None
    enabled: bool
    share: float
    ports: tuple[int, ...] = ()  # the processes its servers in rotation point at
    reaches_canary: bool = False
    answers: Mapping[str, int] = field(default_factory=dict)  # load generator answers per version

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "enabled": self.enabled,
            "share": self.share,
            "ports": list(self.ports),
            "reaches_canary": self.reaches_canary,
            "answers_by_version": dict(self.answers),
        }

    def line(self) -> str:
        """The ``status`` line: ``preview  <url> open -> canary ports [..], 5 % of the load; answers ...``."""
        if not self.enabled:
            where = "closed"
        else:
            target = "the canary" if self.reaches_canary else "NOT the canary"
            where = f"open -> {target} {list(self.ports)}, {self.share:.0%} of the load"
        answers = ", ".join(f"{k}={v}" for k, v in sorted(self.answers.items())) or "none"
        return f"  preview     {self.url} {where}; answers by version: {answers}"


def preview_ports(rows: Mapping[str, Mapping[str, str]]) -> tuple[int, ...]:
    """The ports the preview backend's servers in rotation (not MAINT) point at, sorted."""
    return tuple(
        sorted(
            int(port)
            for row in rows.values()
            if row.get("status") != "MAINT" and (port := row.get("addr", "").rpartition(":")[2]).isdigit()
        )
    )


def reaches_canary(ports: tuple[int, ...], canary_ports: tuple[int, ...]) -> bool:
    """The preview route reaches exactly the canary's processes (and there are some)."""
    return bool(ports) and sorted(ports) == sorted(canary_ports)


def read_preview(
    fleet: Mapping[str, Any],
    preview_port: int | None,
    rows: Mapping[str, Mapping[str, str]],
    counts: Mapping[str, Any] | None,
) -> PreviewStatus:
    """The preview route of a fleet's state, checked against HAProxy's preview backend ``rows``."""
    preview = fleet.get("preview") or {}
    ports = preview_ports(rows)
    canary = fleet.get("canary") or {}
    canary_ports = () if canary.get("failed") else tuple(inst["port"] for inst in canary.get("instances", []))
    return PreviewStatus(
        url=f"http://127.0.0.1:{preview_port}/" if preview_port else None,
        enabled=bool(preview.get("enabled")),
        share=float(preview.get("share") or 0.0),
        ports=ports,
        reaches_canary=reaches_canary(ports, canary_ports),
        answers=dict(((counts or {}).get("preview") or {}).get("by_version") or {}),
    )

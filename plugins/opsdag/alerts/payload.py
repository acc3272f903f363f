"""Prometheus Alertmanager's webhook payload (version 4), validated before anything is started.

Alertmanager posts a notification per alert group: ``status``, ``groupKey``, ``alerts[]``
each with ``status``, ``labels`` (``alertname`` among them), ``annotations``, ``startsAt``,
``endsAt`` and ``fingerprint``. Fields Alertmanager may add later are kept, not refused;
the ones opsdag acts on are required and typed, and a problem names its field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_BYTES = 1 << 20  # Alertmanager's payloads are small; a bigger one is refused (413)


class PayloadRefused(ValueError):
    """The body is not an Alertmanager notification; the message names what is wrong."""


class Alert(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime
    endsAt: datetime | None = None
    fingerprint: str = Field(pattern=r"^[0-9a-f]{8,64}$")
    generatorURL: str = ""

    @field_validator("labels")
    @classmethod
    def _has_a_name(cls, labels: dict[str, str]) -> dict[str, str]:
        if not labels.get("alertname"):
            raise ValueError("an alert needs the label alertname")
        return labels

    @field_validator("startsAt", "endsAt")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("a time needs its zone (Alertmanager sends RFC 3339)")
        return value.astimezone(UTC)

    @property
    def name(self) -> str:
        return self.labels["alertname"]

    def to_conf(self) -> dict[str, Any]:
        """What a runbook run receives as its ``alert`` param."""
        return {
            "name": self.name,
            "status": self.status,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": self.startsAt.isoformat(),
            "fingerprint": self.fingerprint,
            "generatorURL": self.generatorURL,
        }


class Notification(BaseModel):
    model_config = ConfigDict(extra="allow")

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    groupKey: str
    receiver: str = ""
    alerts: list[Alert] = Field(min_length=1)


def parse(body: bytes) -> Notification:
    """The notification in ``body``, or ``PayloadRefused`` naming the first problems."""
    if len(body) > MAX_BYTES:
        raise PayloadRefused(f"the body has {len(body)} bytes; at most {MAX_BYTES} are accepted")
    try:
        return Notification.model_validate_json(body)
    except ValidationError as exc:
        problems = []
        for error in exc.errors()[:5]:
            where = ".".join(str(part) for part in error["loc"]) or "(body)"
            if error["type"] == "json_invalid":
                problems.append(f"the body is not JSON: {error['msg']}")
            else:
                problems.append(f"{where}: {error['msg']}")
        more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
        raise PayloadRefused(
            "not an Alertmanager webhook payload (version 4): " + "; ".join(problems) + more
        ) from None

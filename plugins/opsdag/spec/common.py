"""Building blocks shared by the spec models: strict base model, durations, names."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, PlainSerializer

_DURATION = re.compile(r"^\s*([-+]?\d+)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_SECONDS = 366 * 86400 * 100  # a century; timedelta itself overflows at 10**9 days
_DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class FieldProblem(ValueError):
    """A validator's error about one item below the validated field.

    A validator of ``canary.steps`` that finds the third weight wrong raises
    ``FieldProblem((2, "weight"), "...")``; the loader then reports the problem at
    ``canary.steps[2].weight`` instead of at the whole list.
    """

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a spec must never be silently ignored.

    Nor are YAML's ``.nan`` and ``.inf`` numbers: a bound of NaN would never be crossed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, allow_inf_nan=False)


def parse_duration(value: object) -> timedelta:
    """Read ``30s``, ``5m``, ``2h``, ``1d``, ``500ms`` (or a bare number of seconds)."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool | dict | list) or value is None:
        if isinstance(value, bool):
            shown = "true" if value else "false"
        else:
            shown = "empty" if value is None else "a list or mapping"
        raise ValueError(f"must be a duration like 30s, 5m or 1h, not {shown}")
    elif isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration; write it like 30s, 5m, 2h or 1d")
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if math.isnan(seconds):
        raise ValueError("nan is not a duration; write it like 30s, 5m, 2h or 1d")
    if seconds > _MAX_SECONDS:
        raise ValueError(f"{value!r} is too long for a duration")
    if seconds <= 0:
        raise ValueError(f"{value!r} must be a positive duration, like 30s or 5m")
    return value if isinstance(value, timedelta) else timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds * 1000)}ms"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]


def check_dns_name(value: str) -> str:
    """DNS-1123 label: the name becomes part of DAG ids, Kubernetes objects and paths."""
    if len(value) > 63:
        raise ValueError(f"{value!r} is longer than 63 characters")
    if not _DNS_1123.match(value):
        raise ValueError(
            f"{value!r} is not a DNS-1123 name: use lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


DnsName = Annotated[str, AfterValidator(check_dns_name)]

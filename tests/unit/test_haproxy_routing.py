"""The HAProxy router's arithmetic without HAProxy: the split its server rows put in force, the
preview route's target, and the runtime commands that take the servers where they should be."""

from __future__ import annotations

import pytest

from opsdag.dev.sandbox.haproxy_server import Slot, routing_commands
from opsdag.dev.sandbox.preview_status import PreviewStatus, preview_ports, reaches_canary
from opsdag.platforms.routers.haproxy import split_from_rows


def row(status: str, weight: int, port: int = 1000) -> dict[str, str]:
    return {"status": status, "weight": str(weight), "uweight": str(weight), "addr": f"127.0.0.1:{port}"}


@pytest.mark.parametrize(
    ("rows", "requested", "split"),
    [
        ({"stable1": row("UP", 200), "stable2": row("UP", 200)}, 0, (100.0, 0.0, True)),
        (
            {"stable1": row("UP", 200), "canary1": row("UP", 22), "canary2": row("MAINT", 200)},
            10,
            (90.1, 9.9, True),
        ),
        # a canary server that is down takes nothing, whatever its weight: not what was asked
        ({"stable1": row("UP", 200), "canary1": row("DOWN", 200)}, 50, (100.0, 0.0, False)),
        (
            {"stable1": row("UP 1/2", 100), "canary1": row("UP", 100)},
            50,
            (50.0, 50.0, True),
        ),  # up, 1 check failed
        ({"stable1": row("DOWN 1/2", 100), "canary1": row("UP", 100)}, 50, (0.0, 100.0, False)),  # still down
        ({"stable1": row("DRAIN", 200), "canary1": row("UP", 200)}, 100, (0.0, 100.0, True)),
        ({"stable1": row("UP", 0), "canary1": row("UP", 200)}, 100, (0.0, 100.0, True)),  # switched
        ({"stable1": row("no check", 200), "canary1": row("NOLB", 200)}, 0, (100.0, 0.0, True)),
        ({"stable1": row("MAINT", 200)}, 0, (0.0, 0.0, False)),  # nothing takes traffic
        (
            {"stable1": row("UP", 200), "preview1": row("UP", 1)},
            0,
            (100.0, 0.0, True),
        ),  # other servers ignored
    ],
)
def test_split_in_force(rows: dict, requested: int, split: tuple[float, float, bool]) -> None:
    result = split_from_rows(rows, requested, preview=True)
    assert (result.stable, result.canary, result.exact) == split
    assert result.requested == requested and result.preview


def test_a_weight_that_is_not_a_number_counts_as_none() -> None:
    rows = {"stable1": row("UP", 200), "canary1": {"status": "UP", "weight": ""}}
    assert split_from_rows(rows, 0).canary == 0.0


def test_preview_reaches_exactly_the_canary() -> None:
    rows = {"preview1": row("UP", 1, 7001), "preview2": row("UP", 1, 7002), "preview3": row("MAINT", 0, 9)}
    ports = preview_ports(rows)
    assert ports == (7001, 7002)
    assert reaches_canary(ports, (7002, 7001))
    assert not reaches_canary(ports, (7001,))  # a canary instance it does not reach (or one too many)
    assert not reaches_canary((), ())  # parked: reaches nothing
    assert preview_ports({"preview1": {"status": "UP", "addr": "127.0.0.1:x"}}) == ()


def test_the_preview_line_of_status() -> None:
    open_ = PreviewStatus("http://127.0.0.1:5/", True, 0.05, (7001,), True, {"1.1.0": 12})
    assert open_.line() == (
        "  preview     http://127.0.0.1:5/ open -> the canary [7001], 5% of the load; "
        "answers by version: 1.1.0=12"
    )
    wrong = PreviewStatus("http://127.0.0.1:5/", True, 0.2, (7009,), False)
    assert "open -> NOT the canary [7009], 20% of the load; answers by version: none" in wrong.line()
    assert "http://127.0.0.1:5/ closed;" in PreviewStatus("http://127.0.0.1:5/", False, 0.0).line()
    assert open_.to_dict()["answers_by_version"] == {"1.1.0": 12}


def test_routing_commands_send_only_differences_rising_weights_first() -> None:
    current = {
        "stable1": row("UP", 200, 8001),
        "canary1": row("UP", 200, 8101),
        "canary2": row("MAINT", 0, 9),
    }
    desired = [
        Slot("stable1", "stable", 8001, 200),
        Slot("canary1", "canary", 8101, 22),
        Slot("canary2", "canary", 8102, 22),
    ]
    assert routing_commands("demo", current, desired) == [
        # canary2 rises from nothing (maint) first, then canary1 comes down
        "set server demo/canary2 weight 22",
        "set server demo/canary2 addr 127.0.0.1 port 8102",
        "set server demo/canary2 state ready",
        "set server demo/canary1 weight 22",
    ]
    switched = [
        Slot("stable1", "stable", 8001, 0),
        Slot("canary1", "canary", 8101, 200),
        Slot("canary2", "canary", None, 0),
    ]
    assert routing_commands("demo", current, switched) == ["set server demo/stable1 weight 0"]
    parked = [
        Slot("stable1", "stable", 8001, 200),
        Slot("canary1", "canary", None, 0),
        Slot("canary2", "canary", None, 0),
    ]
    assert routing_commands("demo", current, parked) == [
        "set server demo/canary1 weight 0",  # out of the rotation first, then parked
        "set server demo/canary1 state maint",
    ]
    same = [
        Slot("stable1", "stable", 8001, 200),
        Slot("canary1", "canary", 8101, 200),
        Slot("canary2", "canary", None, 0),
    ]
    assert routing_commands("demo", current, same) == []

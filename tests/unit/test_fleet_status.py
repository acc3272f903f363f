"""The sandbox fleet's typed status: the measured split and "is stable healthy", without servers."""

from __future__ import annotations

from opsdag.dev.sandbox.fleet_status import (
    FleetStatus,
    InstanceStatus,
    TrackStatus,
    TrafficStatus,
    measure_traffic,
)


def row(status: str, total: int, weight: int = 100) -> dict[str, str]:
    """A row of HAProxy's ``show stat`` with ``total`` responses (all 2xx)."""
    return {"status": status, "weight": str(weight), "addr": "127.0.0.1:1", "hrsp_2xx": str(total)}


def test_the_split_counts_only_responses_since_the_last_change() -> None:
    rows = {"stable1": row("UP", 130), "canary1": row("UP", 40), "canary2": row("MAINT", 0)}
    baseline = {"at": 100.0, "responses": {"stable1": 100, "canary1": 10}}
    traffic = measure_traffic(rows, baseline, 50, now=112.34)
    assert traffic.configured == {"stable": 50, "canary": 50}
    assert traffic.measured.responses == {"stable": 30, "canary": 30}
    assert (traffic.measured.stable, traffic.measured.canary) == (50.0, 50.0)
    assert traffic.measured.window_s == 12.3
    assert set(traffic.servers) == {"stable1", "canary1"}  # a parked slot that served nothing is left out
    assert traffic.servers["canary1"].responses_since_change == 30


def test_a_counter_below_its_baseline_means_haproxy_restarted() -> None:
    traffic = measure_traffic(
        {"stable1": row("UP", 7)}, {"at": 0.0, "responses": {"stable1": 500}}, 0, now=1.0
    )
    assert traffic.measured.responses == {"stable": 7, "canary": 0}
    assert traffic.measured.stable == 100.0 and traffic.measured.canary == 0.0


def test_no_responses_yet_is_no_measurement() -> None:
    traffic = measure_traffic({"stable1": row("UP", 0)}, {"at": 5.0, "responses": {}}, 25, now=5.0)
    assert traffic.measured.stable is None and traffic.measured.canary is None
    assert traffic.to_dict()["measured"]["responses"] == {"stable": 0, "canary": 0}


def fleet(instances: tuple[InstanceStatus, ...], traffic: TrafficStatus | None) -> FleetStatus:
    stable = TrackStatus("demo-api:1.0.0", "1.0.0", "d1", instances)
    return FleetStatus("/sbx", "demo-api", stable, None, 0, traffic, None, None)


def test_stable_is_healthy_when_every_process_runs_and_is_up_in_haproxy() -> None:
    one = InstanceStatus("app-1", 1001, "stable1", "1.0.0", 11, running=True)
    two = InstanceStatus("app-2", 1002, "stable2", "1.0.0", 12, running=True)
    up = measure_traffic({"stable1": row("UP", 1), "stable2": row("UP", 1)}, {}, 0, now=0.0)
    assert fleet((one, two), up).stable_healthy
    half = measure_traffic({"stable1": row("UP", 1), "stable2": row("DOWN", 1)}, {}, 0, now=0.0)
    assert not fleet((one, two), half).stable_healthy
    stopped = InstanceStatus("app-2", 1002, "stable2", "1.0.0", 12, running=False)
    assert not fleet((one, stopped), up).stable_healthy
    assert not fleet((one, two), None).stable_healthy  # HAProxy does not run
    assert not fleet((), up).stable_healthy


def test_the_json_of_a_fleet_without_haproxy() -> None:
    one = InstanceStatus("app-1", 1001, "stable1", "1.0.0", 11, running=True)
    data = fleet((one,), None).to_dict()
    assert data["stable"]["instances"] == [
        {"name": "app-1", "port": 1001, "slot": "stable1", "version": "1.0.0", "pid": 11, "running": True}
    ]
    assert data["canary"] is None and data["traffic"] is None and data["canary_weight"] == 0

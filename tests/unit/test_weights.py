"""The traffic arithmetic of a release: replica shares, rolling batches, HAProxy server weights."""

from __future__ import annotations

import pytest

from opsdag.platforms.weights import (
    SERVER_WEIGHT_SCALE,
    RollingBatch,
    replica_share,
    rolling_plan,
    server_weights,
    share_in_force,
    split_is_exact,
)


@pytest.mark.parametrize(
    ("canary", "stable", "percent"),
    [
        (1, 1, 50),
        (1, 3, 25),
        (1, 2, 33),  # 33.3
        (2, 1, 67),  # 66.7
        (1, 7, 13),  # 12.5: half rounds up
        (3, 5, 38),  # 37.5: half rounds up
        (1, 199, 1),  # 0.5: half rounds up
        (1, 201, 0),  # 0.495
        (0, 5, 0),
        (5, 0, 100),
        (4, 1, 80),
        (7, 1, 88),  # 87.5
    ],
)
def test_replica_share(canary: int, stable: int, percent: int) -> None:
    assert replica_share(canary, stable) == percent


@pytest.mark.parametrize(
    ("canary", "stable", "problem"),
    [
        (0, 0, "no replicas at all"),
        (-1, 3, "canary replicas must be a whole number of at least 0, got -1"),
        (1, -2, "stable replicas must be a whole number of at least 0, got -2"),
        (True, 3, "canary replicas must be a whole number of at least 0, got True"),
        (1, 2.0, "stable replicas must be a whole number of at least 0, got 2.0"),
    ],
)
def test_replica_share_refuses(canary: object, stable: object, problem: str) -> None:
    with pytest.raises(ValueError, match=f"^{problem}"):
        replica_share(canary, stable)  # type: ignore[arg-type]


def batches(plan: list[RollingBatch]) -> list[tuple[int, int, int]]:
    return [(b.canary, b.stable, b.weight) for b in plan]


@pytest.mark.parametrize(
    ("instances", "surge", "unavailable", "expected"),
    [
        # one at a time; the last old instance stays beside all the new ones until promote
        (4, 1, 0, [(1, 3, 25), (2, 2, 50), (3, 1, 75), (4, 1, 80)]),
        (4, 0, 1, [(1, 3, 25), (2, 2, 50), (3, 1, 75), (4, 1, 80)]),
        (4, 2, 0, [(2, 2, 50), (4, 1, 80)]),
        (4, 1, 1, [(2, 2, 50), (4, 1, 80)]),
        (4, 3, 0, [(3, 1, 75), (4, 1, 80)]),
        (3, 1, 1, [(2, 1, 67), (3, 1, 75)]),
        (2, 0, 1, [(1, 1, 50), (2, 1, 67)]),
        (1, 1, 0, [(1, 1, 50)]),
        (1, 0, 1, [(1, 1, 50)]),
        (5, 8, 0, [(5, 1, 83)]),  # a batch never starts more than the service runs
        (8, 0, 3, [(3, 5, 38), (6, 2, 75), (8, 1, 89)]),
    ],
)
def test_rolling_plan(instances: int, surge: int, unavailable: int, expected: list) -> None:
    plan = rolling_plan(instances, surge, unavailable)
    assert batches(plan) == expected
    assert all(batch.stable >= 1 for batch in plan)
    assert plan[-1].canary == instances


@pytest.mark.parametrize(
    ("instances", "surge", "unavailable", "problem"),
    [
        (4, 0, 0, "max_surge and max_unavailable cannot both be 0: no batch could start"),
        (0, 1, 0, "instances must be a whole number of at least 1, got 0"),
        (2, -1, 2, "max_surge must be a whole number of at least 0, got -1"),
        (2, 1, -1, "max_unavailable must be a whole number of at least 0, got -1"),
        (2, True, 0, "max_surge must be a whole number of at least 0, got True"),
        (2.5, 1, 0, "instances must be a whole number of at least 1, got 2.5"),
    ],
)
def test_rolling_plan_refuses(instances: object, surge: object, unavailable: object, problem: str) -> None:
    with pytest.raises(ValueError, match=f"^{problem}$"):
        rolling_plan(instances, surge, unavailable)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("percent", "n_stable", "n_canary", "weights"),
    [
        (50, 2, 2, (200, 200)),
        (10, 2, 2, (200, 22)),
        (0, 2, 2, (200, 0)),
        (100, 2, 2, (0, 200)),
        (25, 1, 3, (200, 22)),  # 75 per stable server, 8.3 per canary server
        (70, 1, 1, (86, 200)),  # the busier side gets the full weight
        (1, 1, 8, (200, 1)),  # a share above 0 never rounds down to 0
        (99, 8, 1, (1, 200)),
        (30, 0, 0, (SERVER_WEIGHT_SCALE, 0)),
        (30, 3, 0, (200, 0)),  # no canary server: all to stable
        (30, 0, 2, (0, 200)),  # no stable server: all to the canary
    ],
)
def test_server_weights(percent: int, n_stable: int, n_canary: int, weights: tuple[int, int]) -> None:
    assert server_weights(percent, n_stable, n_canary) == weights


def test_server_weights_scale_and_the_share_they_put_in_force() -> None:
    assert SERVER_WEIGHT_SCALE == 200
    assert server_weights(50, 1, 1, scale=100) == (100, 100)
    assert server_weights(10, 1, 1, scale=100) == (100, 11)
    stable_w, canary_w = server_weights(10, 2, 2)
    assert share_in_force([stable_w] * 2, [canary_w] * 2) == (90.1, 9.9)
    stable_w, canary_w = server_weights(1, 1, 8)  # 8 canary servers of weight 1 cannot make 1 %
    assert share_in_force([stable_w], [canary_w] * 8) == (96.2, 3.8)


@pytest.mark.parametrize(
    ("percent", "n_stable", "n_canary", "problem"),
    [
        (101, 2, 2, "canary weight must be between 0 and 100, got 101"),
        (-1, 2, 2, "canary weight must be a whole number of at least 0, got -1"),
        (True, 2, 2, "canary weight must be a whole number of at least 0, got True"),
        (10, -1, 2, "stable servers must be a whole number of at least 0, got -1"),
        (10, 2, -1, "canary servers must be a whole number of at least 0, got -1"),
    ],
)
def test_server_weights_refuses(percent: object, n_stable: int, n_canary: int, problem: str) -> None:
    with pytest.raises(ValueError, match=f"^{problem}$"):
        server_weights(percent, n_stable, n_canary)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("stable", "canary", "split"),
    [
        ([200, 200], [22, 22], (90.1, 9.9)),
        ([200], [], (100.0, 0.0)),
        ([], [5], (0.0, 100.0)),
        ([1, 2], [3], (50.0, 50.0)),
        ([2], [1], (66.7, 33.3)),
        ([], [], (0.0, 0.0)),  # nothing takes traffic
        ([0], [0], (0.0, 0.0)),
    ],
)
def test_share_in_force(stable: list[int], canary: list[int], split: tuple[float, float]) -> None:
    assert share_in_force(stable, canary) == split


@pytest.mark.parametrize(
    ("in_force", "requested", "exact"),
    [
        (9.9, 10, True),
        (10.49, 10, True),
        (9.51, 10, True),
        (9.5, 10, False),
        (10.5, 10, False),
        (0.0, 0, True),
        (22.5, 30, False),
        (3.8, 1, False),
    ],
)
def test_split_is_exact_when_it_rounds_to_the_percent_asked(
    in_force: float, requested: int, exact: bool
) -> None:
    assert split_is_exact(in_force, requested) is exact

"""The replica ratio's rounding rule and how its split is read and said (pure, no cluster)."""

from __future__ import annotations

import pytest

from opsdag.platforms.base import TrafficSplit
from opsdag.platforms.routers.replica_ratio import ReplicaRatioRouter, ready_counts, split_of
from opsdag.platforms.weights import ratio_replicas, ratio_sentence, rolling_plan


@pytest.mark.parametrize(
    ("percent", "stable", "most", "canary", "why"),
    [
        (25, 6, 10, 2, "the issue's first example: 2 of 8 = 25 %"),
        (10, 4, 10, 1, "the issue's second example: 1 of 5 = 20 %, the nearest above 0"),
        (50, 2, 10, 2, "exact: as many as the stable"),
        (60, 2, 10, 3, "exact: 3 of 5"),
        (75, 1, 10, 3, "exact: 3 of 4"),
        (5, 10, 10, 1, "0.53 canary replicas wanted: 1 of 11 = 9.1 %"),
        (1, 1, 10, 1, "never 0 above 0 %: 1 of 2 = 50 %"),
        (40, 2, 10, 1, "1.33 wanted: 1 of 3 = 33.3 % (6.7 off) beats 2 of 4 = 50 % (10 off)"),
        (20, 6, 10, 2, "1.5 wanted: 2 of 8 = 25 % (5 off) beats 1 of 7 = 14.3 % (5.7 off)"),
        (15, 8, 10, 1, "1.41 wanted: 1 of 9 = 11.1 % (3.9 off) beats 2 of 10 = 20 % (5 off)"),
        (34, 4, 10, 2, "2.06 wanted: 2 of 6 = 33.3 %"),
        (95, 4, 10, 10, "76 wanted, capped: 10 of 14 = 71.4 %"),
        (100, 2, 10, 10, "out of a ratio's reach beside a stable replica: the cap"),
        (100, 2, 4, 4, "the cap"),
        (0, 4, 10, 0, "the abort: no canary replica"),
    ],
)
def test_the_canary_count_nearest_the_percent(
    percent: int, stable: int, most: int, canary: int, why: str
) -> None:
    assert ratio_replicas(percent, stable, most) == canary, why


@pytest.mark.parametrize(("percent", "stable"), [(55, 2), (45, 3)])
def test_a_tie_goes_to_fewer_canary_replicas(percent: int, stable: int) -> None:
    # 55 % beside 2: 2 of 4 = 50 % and 3 of 5 = 60 % are both 5 off; 45 % beside 3: 40 % and 50 %.
    assert ratio_replicas(percent, stable, 10) == 2


@pytest.mark.parametrize(("instances", "surge", "unavailable"), [(4, 1, 0), (5, 2, 1), (10, 3, 0), (3, 1, 1)])
def test_a_rolling_batch_s_weight_gives_back_its_canary_count(
    instances: int, surge: int, unavailable: int
) -> None:
    """Rolling batches set their weight from their counts: the ratio router must not change them."""
    for batch in rolling_plan(instances, surge, unavailable):
        assert ratio_replicas(batch.weight, batch.stable, instances) == batch.canary, batch


@pytest.mark.parametrize("stable", [1, 2, 3, 4, 6, 10])
def test_every_percent_gets_the_nearest_share_a_whole_count_gives(stable: int) -> None:
    for percent in range(1, 100):
        canary = ratio_replicas(percent, stable, 1000)
        got = 100 * canary / (stable + canary)
        neighbours = [c for c in (canary - 1, canary + 1) if c >= 1]
        assert all(abs(got - percent) <= abs(100 * c / (stable + c) - percent) for c in neighbours), percent


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ((101, 2, 10), "between 0 and 100"),
        ((-1, 2, 10), "canary weight must be a whole number"),
        ((10, 0, 10), "stable replicas must be a whole number of at least 1"),
        ((10, 2, 0), "most canary replicas must be a whole number of at least 1"),
        ((True, 2, 10), "canary weight must be a whole number"),
    ],
)
def test_impossible_arguments_are_refused_naming_them(args: tuple, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ratio_replicas(*args)


@pytest.mark.parametrize(
    ("requested", "canary", "stable", "sentence"),
    [
        (10, 1, 4, "asked 10 %, got 1 of 5 replicas = 20 %"),
        (25, 2, 6, "asked 25 %, got 2 of 8 replicas = 25 %"),
        (10, 1, 2, "asked 10 %, got 1 of 3 replicas = 33.3 %"),
        (None, 2, 2, "no weight asked, got 2 of 4 replicas = 50 %"),
        (100, 4, 2, "asked 100 %, got 4 of 6 replicas = 66.7 %"),
        (5, 0, 0, "asked 5 %, got no replica taking traffic"),
    ],
)
def test_the_split_in_words(requested: int | None, canary: int, stable: int, sentence: str) -> None:
    assert ratio_sentence(requested, canary, stable) == sentence


@pytest.mark.parametrize(
    ("canary", "stable", "requested", "split"),
    [
        (2, 6, 25, TrafficSplit(stable=75.0, canary=25.0, exact=True, requested=25)),
        (1, 4, 10, TrafficSplit(stable=80.0, canary=20.0, exact=False, requested=10)),
        (0, 4, 0, TrafficSplit(stable=100.0, canary=0.0, exact=True, requested=0)),
        (2, 2, None, TrafficSplit(stable=50.0, canary=50.0, exact=False, requested=None)),
        (0, 0, 10, TrafficSplit(stable=0.0, canary=0.0, exact=False, requested=10)),
    ],
)
def test_the_split_read_back_is_the_ready_pods_ratio(
    canary: int, stable: int, requested: int | None, split: TrafficSplit
) -> None:
    assert split_of(canary, stable, requested) == split


def _pod(name: str, track: str, *, ready: bool = True, deleting: bool = False) -> dict:
    meta = {"name": name, "labels": {"app": "checkout", "track": track}}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-30T08:00:00Z"
    condition = {"type": "Ready", "status": "True" if ready else "False"}
    return {"metadata": meta, "status": {"conditions": [condition], "podIP": "10.1.0.1"}}


def test_only_ready_pods_not_being_deleted_take_traffic() -> None:
    pods = [
        _pod("s1", "stable"),
        _pod("s2", "stable", ready=False),
        _pod("c1", "canary"),
        _pod("c2", "canary", deleting=True),
        _pod("c3", "canary"),
    ]
    assert ready_counts(pods, {"app": "checkout", "track": "canary"}) == (2, 1)
    assert ready_counts(pods, None) == (0, 3)  # no canary Deployment: every pod behind the Service is stable


def test_the_registry_builds_it_from_the_spec_and_says_it_splits_but_not_exactly() -> None:
    from opsdag.paths import include_dir
    from opsdag.platforms.registry import router_class, router_for
    from opsdag.spec.loader import read_yaml
    from opsdag.spec.service import ServiceSpec

    raw = read_yaml((include_dir() / "services" / "checkout.yaml").read_text(encoding="utf-8"))
    raw["platform"]["router"] = {"kind": "replica-ratio"}
    spec = ServiceSpec.model_validate(raw)
    router = router_for(spec)
    assert isinstance(router, ReplicaRatioRouter)
    assert (router.service, router.max_canary_replicas, router.namespace) == ("checkout", 10, "shop")
    assert router_class(spec).can_split and not router_class(spec).exact_split
    raw["platform"]["router"] = {"kind": "replica-ratio", "service": "checkout-all", "max_canary_replicas": 3}
    assert router_for(raw).service == "checkout-all" and router_for(raw).max_canary_replicas == 3
    raw["platform"]["router"] = {"kind": "replica-ratio", "replicas": 10}  # the former field
    with pytest.raises(ValueError, match="replicas"):
        ServiceSpec.model_validate(raw)

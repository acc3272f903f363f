"""Which strategy a release runs, and the stages each strategy goes through, as data."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from opsdag.spec.loader import load_kind
from opsdag.spec.service import ServiceSpec
from opsdag.strategies.choice import StrategyRefused, choose_strategy
from opsdag.strategies.stages import peak_instances, release_task_ids, stage_plans

INCLUDE = Path(__file__).resolve().parents[2] / "include"
DEMO = load_kind(INCLUDE, "services").specs["demo-api"]
CHECKOUT = load_kind(INCLUDE, "services").specs["checkout"]
HAPROXY = {"router_kind": "haproxy", "can_split": True, "can_preview": True}


def only(spec: ServiceSpec, *keep: str, default: str | None = None) -> ServiceSpec:
    """``spec`` with only the strategy sections in ``keep`` (the default the first kept)."""
    data = spec.model_dump(mode="json")
    for name in ("canary", "bluegreen", "rolling"):
        if name not in keep:
            data.pop(name, None)
    data["strategy"] = default or keep[0]
    return ServiceSpec.model_validate(data)


@pytest.mark.parametrize(
    ("requested", "expected"),
    [(None, "canary"), ("canary", "canary"), ("bluegreen", "bluegreen"), ("rolling", "rolling")],
)
def test_the_run_s_strategy_else_the_spec_s_default(requested, expected) -> None:
    assert choose_strategy(requested, DEMO, **HAPROXY) == expected


def test_the_default_of_the_spec_counts_when_the_run_asks_nothing() -> None:
    assert choose_strategy(None, only(DEMO, "rolling", "canary"), **HAPROXY) == "rolling"
    assert choose_strategy("", only(DEMO, "bluegreen"), **HAPROXY) == "bluegreen"


@pytest.mark.parametrize(
    ("spec", "requested", "router", "message"),
    [
        (
            only(DEMO, "canary"),
            "rolling",
            HAPROXY,
            "strategy: demo-api cannot be released with rolling: its spec has no rolling section "
            "(it can be released with: canary)",
        ),
        (
            only(DEMO, "canary", "rolling"),
            "bluegreen",
            HAPROXY,
            "strategy: demo-api cannot be released with bluegreen: its spec has no bluegreen section "
            "(it can be released with: canary, rolling)",
        ),
        (
            only(DEMO, "rolling"),
            "canary",
            HAPROXY,
            "strategy: demo-api cannot be released with canary: its spec has no canary.steps "
            "(it can be released with: rolling)",
        ),
        (
            DEMO,
            "canary",
            {**HAPROXY, "router_kind": "service-selector", "can_split": False},
            "strategy: canary needs a router that splits traffic by weight; demo-api's router "
            "'service-selector' cannot",
        ),
        (
            DEMO,
            "bluegreen",
            {**HAPROXY, "router_kind": "nginx", "can_preview": False},
            "strategy: bluegreen judges the new colour on a preview route; "
            "demo-api's router 'nginx' has none",
        ),
        (DEMO, "yolo", HAPROXY, "strategy: 'yolo' is not one of canary, bluegreen, rolling"),
    ],
)
def test_a_strategy_the_service_cannot_do_is_refused_naming_the_field(
    spec, requested, router, message
) -> None:
    with pytest.raises(StrategyRefused) as refused:
        choose_strategy(requested, spec, **router)
    assert str(refused.value) == message


def test_rolling_needs_a_router_that_moves_a_share_of_the_traffic() -> None:
    switch_only = {"router_kind": "service-selector", "can_split": False, "can_preview": True}
    with pytest.raises(StrategyRefused, match=r"^strategy: rolling moves a share .* 'service-selector' only"):
        choose_strategy("rolling", DEMO, **switch_only)
    assert choose_strategy("rolling", DEMO, **{**switch_only, "can_split": True}) == "rolling"


def test_canary_stages_are_the_spec_s_steps_with_their_task_ids() -> None:
    plans = stage_plans(CHECKOUT, "canary")
    assert [(p.name, p.weight, p.bake) for p in plans] == [
        ("stage_5", 5, timedelta(minutes=5)),
        ("stage_25", 25, timedelta(minutes=10)),
        ("stage_100", 100, timedelta(minutes=10)),
    ]
    assert [p.approval_task for p in plans] == [None, "canary.stage_25.approval", None]
    assert {p.abort for p in plans} == {"weight_zero"}


def test_bluegreen_stages_are_the_preview_then_the_switch() -> None:
    preview, active = stage_plans(DEMO, "bluegreen")
    assert (preview.name, preview.weight, preview.abort, preview.move_task) == (
        "preview",
        0,
        "preview_off",
        "bluegreen.preview.open",
    )
    assert (active.name, active.weight, active.abort, active.move_task) == (
        "active",
        100,
        "switch_back",
        "bluegreen.active.switch",
    )
    assert (preview.bake, active.bake) == (timedelta(seconds=20), timedelta(seconds=20))


def test_rolling_stages_replace_instances_batch_by_batch() -> None:
    plans = stage_plans(DEMO, "rolling")
    assert [(p.name, p.canary_instances, p.stable_instances) for p in plans] == [
        ("batch_1", 1, 1),
        ("batch_2", 2, 1),
    ]
    assert [p.gate_task for p in plans] == ["rolling.batch_1.gate", "rolling.batch_2.gate"]


def test_task_ids_in_run_order_for_each_strategy() -> None:
    assert release_task_ids(CHECKOUT, "canary") == [
        "validate_request",
        "build",
        "preflight",
        "strategy",
        "canary.deploy",
        "canary.smoke",
        "canary.stage_5.set_weight",
        "canary.stage_5.gate",
        "canary.stage_25.approval",
        "canary.stage_25.set_weight",
        "canary.stage_25.gate",
        "canary.stage_100.set_weight",
        "canary.stage_100.gate",
        "promote",
        "post_promotion_check",
        "rollback",
    ]
    assert release_task_ids(DEMO, "bluegreen")[4:-3] == [
        "bluegreen.deploy",
        "bluegreen.smoke",
        "bluegreen.preview.open",
        "bluegreen.preview.gate",
        "bluegreen.active.switch",
        "bluegreen.active.gate",
        "bluegreen.scale_down_delay",
    ]


def test_capacity_needed_at_the_peak_of_each_strategy() -> None:
    assert peak_instances(DEMO, "canary", 2) == 4  # two versions side by side
    assert peak_instances(DEMO, "bluegreen", 2) == 4
    assert peak_instances(DEMO, "rolling", 2) == 3  # one extra instance at a time


def test_the_router_s_abilities_come_from_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from opsdag.platforms.registry import ROUTERS, NoRouter
    from opsdag.strategies.choice import choose_strategy_for

    assert choose_strategy_for("bluegreen", DEMO) == "bluegreen"  # HAProxy has a preview route
    assert choose_strategy_for("canary", DEMO) == "canary"  # and splits traffic by weight
    assert choose_strategy_for(None, CHECKOUT) == "canary"  # NGINX ingress splits by weight
    with pytest.raises(StrategyRefused, match=r"router 'nginx' has none"):
        choose_strategy_for("bluegreen", CHECKOUT.model_copy(update={"bluegreen": DEMO.bluegreen}))
    ratio = CHECKOUT.model_dump(mode="json")
    ratio["platform"]["router"] = {"kind": "replica-ratio"}
    ratio = ServiceSpec.model_validate(ratio)
    assert choose_strategy_for(None, ratio) == "canary"  # a replica ratio splits, rounded
    with pytest.raises(StrategyRefused, match=r"router 'replica-ratio' has none"):
        choose_strategy_for("bluegreen", ratio.model_copy(update={"bluegreen": DEMO.bluegreen}))
    monkeypatch.delitem(ROUTERS, "replica-ratio")  # a version of opsdag without it
    with pytest.raises(NoRouter, match=r"platform\.router\.kind: 'replica-ratio' has no traffic router"):
        choose_strategy_for(None, ratio)

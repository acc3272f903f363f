"""Which strategy a release runs: the run's request, else the service's default, if the service can do it.

Pure: the router's abilities come in as flags, so the choice is tested without a router.
A refusal names the run-conf field (``strategy``) and what the service lacks, before
anything changes.
"""

from __future__ import annotations

from opsdag.spec.service import ServiceSpec

STRATEGIES = ("canary", "bluegreen", "rolling")
_SECTION = {"canary": "canary.steps", "bluegreen": "bluegreen section", "rolling": "rolling section"}


class StrategyRefused(ValueError):
    """The requested strategy cannot be done for this service; the message reads ``strategy: problem``."""


def choose_strategy(
    requested: str | None, spec: ServiceSpec, *, router_kind: str, can_split: bool, can_preview: bool
) -> str:
    """The strategy to run: ``requested`` (run conf) or the spec's default, checked against what the
    service declares and what its router can do."""
    strategy = requested or spec.strategy
    if strategy not in STRATEGIES:
        raise StrategyRefused(f"strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}")
    if strategy not in spec.strategies():
        can = ", ".join(spec.strategies())
        raise StrategyRefused(
            f"strategy: {spec.name} cannot be released with {strategy}: its spec has no {_SECTION[strategy]} "
            f"(it can be released with: {can})"
        )
    if strategy == "canary" and not can_split:
        raise StrategyRefused(
            f"strategy: canary needs a router that splits traffic by weight; {spec.name}'s router "
            f"{router_kind!r} cannot"
        )
    if strategy == "rolling" and not can_split:
        raise StrategyRefused(
            f"strategy: rolling moves a share of the traffic with each batch; {spec.name}'s router "
            f"{router_kind!r} only switches all of it (use bluegreen)"
        )
    if strategy == "bluegreen" and not can_preview:
        raise StrategyRefused(
            f"strategy: bluegreen judges the new colour on a preview route; {spec.name}'s router "
            f"{router_kind!r} has none"
        )
    return strategy


def choose_strategy_for(requested: str | None, spec: ServiceSpec) -> str:
    """:func:`choose_strategy` with the abilities of the service's router, from the registry.

    Raises ``StrategyRefused``, or ``NoDriver`` (a ``LookupError`` naming ``platform.router.kind``)
    when the service's router does not exist in this version.
    """
    from opsdag.platforms.registry import router_class

    router = router_class(spec)
    return choose_strategy(
        requested, spec, router_kind=router.kind, can_split=router.can_split, can_preview=router.can_preview
    )

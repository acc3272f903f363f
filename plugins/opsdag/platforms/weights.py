"""Traffic arithmetic of a release, pure (no I/O): replica ratios, rolling batches, server weights.

The runtime owns these numbers; routers and the sandbox's HAProxy import them, and the
release DAG plans rolling batches with them before anything runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

# HAProxy's per-server weights go up to 256; the busier side's servers get this one.
SERVER_WEIGHT_SCALE = 200


@dataclass(frozen=True)
class RollingBatch:
    """The state after one rolling batch: instances of each version and the new one's share (%)."""

    canary: int
    stable: int
    weight: int


def _whole(value: int, name: str, least: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be a whole number of at least {least}, got {value!r}")


def replica_share(canary: int, stable: int) -> int:
    """Percent of the traffic ``canary`` replicas get beside ``stable`` ones (rounded half up).

    ``replica_share(1, 3) == 25``, ``replica_share(1, 2) == 33``, ``replica_share(2, 1) == 67``.
    """
    _whole(canary, "canary replicas")
    _whole(stable, "stable replicas")
    total = canary + stable
    if total == 0:
        raise ValueError("no replicas at all: there is no share to give")
    return (200 * canary + total) // (2 * total)


def ratio_replicas(percent: int, stable: int, most: int) -> int:
    """Canary replicas beside ``stable`` ones whose share is nearest ``percent``: 0 at 0 %, else 1..``most``.

    The smallest count among the nearest (a tie goes to fewer canary replicas: less at risk).
    A ratio never reaches 100 % beside a stable replica: 100 % (and any share above what
    ``most`` replicas give) is ``most``. ``ratio_replicas(25, 6, 10) == 2`` (2 of 8 = 25 %);
    ``ratio_replicas(10, 4, 10) == 1`` (1 of 5 = 20 %: the nearest a whole replica gets).
    """
    _whole(percent, "canary weight")
    if percent > 100:
        raise ValueError(f"canary weight must be between 0 and 100, got {percent}")
    _whole(stable, "stable replicas", least=1)
    _whole(most, "most canary replicas", least=1)
    if percent == 0:
        return 0
    if percent == 100:
        return most
    wanted = Fraction(percent * stable, 100 - percent)  # the count giving exactly ``percent``
    below = min(most, max(1, wanted.numerator // wanted.denominator))
    above = min(most, max(1, -(-wanted.numerator // wanted.denominator)))

    def distance(canary: int) -> Fraction:
        return abs(Fraction(100 * canary, stable + canary) - percent)

    return min((below, above), key=lambda canary: (distance(canary), canary))


def ratio_sentence(requested: int | None, canary: int, stable: int) -> str:
    """The split of a replica ratio in words: ``asked 10 %, got 1 of 5 replicas = 20 %``.

    ``canary`` and ``stable``: the replicas that take traffic (ready). No weight asked:
    ``no weight asked, got ...``; no replica at all: ``..., got no replica taking traffic``.
    """
    asked = f"asked {requested} %" if requested is not None else "no weight asked"
    total = canary + stable
    if total == 0:
        return f"{asked}, got no replica taking traffic"
    share = round(100 * canary / total, 1)
    return f"{asked}, got {canary} of {total} replicas = {share:g} %"


def rolling_plan(instances: int, max_surge: int, max_unavailable: int) -> list[RollingBatch]:
    """The batches that replace ``instances`` old instances with new ones.

    Each batch replaces ``max_surge + max_unavailable`` more instances (Kubernetes' rule:
    up to ``max_surge`` above ``instances`` while new ones start, up to ``max_unavailable``
    below while old ones stop). The last old instance stays until the last batch's gate
    has passed (promote removes it), so an abort always has a version to send traffic to:
    the last batch runs ``instances`` new and 1 old, even when ``max_surge`` is 0.
    Weights follow the replica ratio (``replica_share``).

    ``rolling_plan(4, 1, 0)`` is (1, 3, 25 %), (2, 2, 50 %), (3, 1, 75 %), (4, 1, 80 %).
    """
    _whole(instances, "instances", least=1)
    _whole(max_surge, "max_surge")
    _whole(max_unavailable, "max_unavailable")
    step = max_surge + max_unavailable
    if step == 0:
        raise ValueError("max_surge and max_unavailable cannot both be 0: no batch could start")
    batches = []
    canary = 0
    while canary < instances:
        canary = min(instances, canary + step)
        stable = max(1, instances - canary)
        batches.append(RollingBatch(canary, stable, replica_share(canary, stable)))
    return batches


def server_weights(
    percent: int, n_stable: int, n_canary: int, scale: int = SERVER_WEIGHT_SCALE
) -> tuple[int, int]:
    """Per-server weights (stable, canary) so the canary servers together get ``percent`` %.

    Each side's share is divided among its servers and scaled so the larger per-server
    weight is ``scale``; with 2 + 2 servers, 50 % gives 200/200 and 10 % gives 200/22. A
    side with a share above 0 never rounds down to weight 0 (so it may get a little more
    than asked: ``share_in_force`` says how much).
    """
    _whole(percent, "canary weight")
    if percent > 100:
        raise ValueError(f"canary weight must be between 0 and 100, got {percent}")
    _whole(n_stable, "stable servers")
    _whole(n_canary, "canary servers")
    if n_canary == 0:
        return scale, 0
    if n_stable == 0:
        return 0, scale
    stable_each = (100 - percent) / n_stable
    canary_each = percent / n_canary
    factor = scale / max(stable_each, canary_each)

    def scaled(share: float) -> int:
        return max(1, round(share * factor)) if share > 0 else 0

    return scaled(stable_each), scaled(canary_each)


def share_in_force(stable_weights: Iterable[int], canary_weights: Iterable[int]) -> tuple[float, float]:
    """Percent of requests (stable, canary) that servers taking traffic with these weights get.

    Only servers that take traffic (up, not in maintenance) may be passed. No weight at
    all (nothing takes traffic) is (0.0, 0.0). Rounded to 0.1 %.
    """
    stable, canary = sum(stable_weights), sum(canary_weights)
    total = stable + canary
    if total == 0:
        return 0.0, 0.0
    return round(100 * stable / total, 1), round(100 * canary / total, 1)


def split_is_exact(canary_in_force: float, requested: int) -> bool:
    """Whether the canary's share in force rounds to the percent that was asked."""
    return abs(canary_in_force - requested) < 0.5

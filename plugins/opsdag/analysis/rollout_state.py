"""Is the platform where a release step says it is? Pure checks of a status and a traffic split.

After a promotion only the new version runs, healthy, with all the traffic; after a
rollback the recorded rollback target is back exactly (image, instance count, split).
Each returns the problems in words (empty: as it should be).
"""

from __future__ import annotations

from opsdag.format import number
from opsdag.platforms.base import RollbackTarget, TrafficSplit, WorkloadStatus


def promoted_state_problems(status: WorkloadStatus, split: TrafficSplit, image: str) -> list[str]:
    """What is wrong after promoting ``image`` (nothing: an empty list)."""
    problems = []
    stable = status.stable
    if stable is None or stable.image != image:
        problems.append(f"stable is {stable.image if stable else 'nothing'}, not {image}")
    elif not status.stable_healthy:
        problems.append(f"stable {image}: {stable.ready_instances} of {stable.instances} instance(s) ready")
    if status.canary is not None:
        problems.append(f"a canary {status.canary.image} still runs")
    if split.canary > 0:
        problems.append(f"the router still sends {number(split.canary)} % to the canary track")
    return problems


def restored_state_problems(status: WorkloadStatus, split: TrafficSplit, target: RollbackTarget) -> list[str]:
    """What differs from the recorded rollback target after an undo (nothing: an empty list)."""
    problems = []
    stable = status.stable
    if stable is None or stable.image != target.image:
        problems.append(f"stable is {stable.image if stable else 'nothing'}, not {target.image}")
    elif stable.instances != target.instances:
        problems.append(f"stable runs {stable.instances} instance(s), not {target.instances}")
    elif not status.stable_healthy:
        problems.append(f"stable: {stable.ready_instances} of {stable.instances} instance(s) ready")
    if status.canary is not None:
        problems.append(f"the new version {status.canary.image} still runs")
    if split.canary != target.canary_weight:
        problems.append(
            f"the router sends {number(split.canary)} % to the canary, not {target.canary_weight} %"
        )
    if split.preview:
        problems.append("the preview route still reaches the new version")
    return problems

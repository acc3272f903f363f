"""One actor per service: a runbook never acts on a service a release or another runbook is acting on.

The rule is enforced through Airflow's own record of what runs (DagRun counts read
through the Task SDK, ``ti.get_dr_count``), never through process memory or a file, so
it holds across workers, schedulers and restarts. This module is the pure part: which
DAGs act on a service (a release's ``release__<service>``, the runbooks whose steps name
it, known from their specs), and the verdict from how many active runs each has.

- A runbook's acting step asks :func:`runbook_rivals` and refuses (stops the runbook
  before any change) while a release of the service is queued or running, or another
  runbook acting on it runs.
- A release's first task (``validate_request``) asks :func:`release_rivals` and refuses
  while a runbook acting on the service runs.

Two actors that start in the same instant both see the other and both refuse: nobody
acts, which is the safe outcome (the alert repeats, the release can be triggered again).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from opsdag.spec.runbook import RunbookSpec

# A release counts from the moment it is queued: once running it changes the service at once.
RELEASE_STATES = ("queued", "running")
# A runbook counts while it runs (a queued one checks for itself before it acts).
RUNBOOK_STATES = ("running",)


def release_dag_id(service: str) -> str:
    return f"release__{service}"


def runbook_dag_id(runbook: str) -> str:
    return f"runbook__{runbook}"


def services_acted_on(spec: RunbookSpec) -> list[str]:
    """The services (and databases) a runbook's steps act on, from its spec, in step order."""
    targets: list[str] = []
    for step in spec.steps:
        target = getattr(step, "service", None) or getattr(step, "database", None)
        if target and step.destructive and target not in targets:
            targets.append(target)
    return targets


def runbooks_acting_on(
    service: str, runbooks: Iterable[RunbookSpec], *, besides: str | None = None
) -> list[str]:
    """DAG ids of the runbooks acting on ``service`` (``besides``: a runbook name left out)."""
    return sorted(
        runbook_dag_id(spec.name)
        for spec in runbooks
        if spec.name != besides and service in services_acted_on(spec)
    )


@dataclass(frozen=True)
class Rival:
    """A DAG whose runs act on the same service, and the run states that count as acting."""

    dag_id: str
    states: tuple[str, ...]


def runbook_rivals(service: str, runbook: str, runbooks: Iterable[RunbookSpec]) -> list[Rival]:
    """What a runbook must not act beside: the service's release (queued or running), other runbooks."""
    return [Rival(release_dag_id(service), RELEASE_STATES)] + [
        Rival(dag_id, RUNBOOK_STATES) for dag_id in runbooks_acting_on(service, runbooks, besides=runbook)
    ]


def release_rivals(service: str, runbooks: Iterable[RunbookSpec]) -> list[Rival]:
    """What a release must not start beside: runbooks acting on its service, while they run."""
    return [Rival(dag_id, RUNBOOK_STATES) for dag_id in runbooks_acting_on(service, runbooks)]


def acting(rivals: Iterable[Rival], count: Callable[[str, list[str]], int]) -> dict[str, int]:
    """Active runs per rival (``count(dag_id, states)``, e.g. ``ti.get_dr_count``); idle rivals left out."""
    found = {}
    for rival in rivals:
        n = count(rival.dag_id, list(rival.states))
        if n:
            found[rival.dag_id] = n
    return found


def conflict(service: str, active: Mapping[str, int]) -> str | None:
    """Why nobody else may act on ``service`` now (None: nobody acts on it)."""
    if not active:
        return None
    who = ", ".join(f"{dag_id} ({n} run{'s' if n > 1 else ''} in flight)" for dag_id, n in active.items())
    return f"{who} {'is' if len(active) == 1 else 'are'} acting on {service}; one actor per service"


def known_runbooks(include: Path) -> list[RunbookSpec]:
    """The valid runbook specs under ``include/runbooks`` (broken ones are reported by the DAG factory)."""
    from opsdag.spec.loader import load_kind

    return list(load_kind(include, "runbooks").specs.values())

"""Turn an analysis query into PromQL for one rollout: ``$canary``/``$stable`` -> label matchers.

The platform knows how its canary and stable workloads are labelled (``track="canary"``
on the sandbox, ``rollouts_pod_template_hash="..."`` on Kubernetes); specs only say
which of the two a query selects, so one spec works on every platform.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_PLACEHOLDER = re.compile(r"\$(canary|stable)\b")


def render_query(query: str, selectors: Mapping[str, str]) -> str:
    """Replace ``$canary`` and ``$stable`` in ``query`` by the platform's matchers.

    ``selectors`` is ``WorkloadDriver.metric_selectors()``, e.g. ``{"canary": 'track="canary"'}``.
    A placeholder without a non-empty selector is an error: an unrendered ``$canary``
    would otherwise reach Prometheus as a parse error far from its cause.
    """

    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        selector = (selectors.get(key) or "").strip()
        if not selector:
            given = ", ".join(sorted(selectors)) or "none"
            raise ValueError(
                f"the query uses ${key} but no {key!r} label matcher was given (selectors: {given})"
            )
        return selector

    return _PLACEHOLDER.sub(replace, query)

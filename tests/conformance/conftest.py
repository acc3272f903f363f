"""The ``platform`` fixture: each platform of ``platforms_under_test.PLATFORMS`` in turn."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from platforms_under_test import PLATFORMS, PlatformUnderTest


@pytest.fixture(params=sorted(PLATFORMS))
def platform(request: pytest.FixtureRequest) -> Iterator[PlatformUnderTest]:
    """A platform at its starting state (and put back there after the test)."""
    under_test = PLATFORMS[request.param](request)
    under_test.reset()
    yield under_test
    under_test.reset()

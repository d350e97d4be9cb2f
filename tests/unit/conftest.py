"""Shared by the unit tests: every test starts with an empty timing table."""

from __future__ import annotations

import pytest

from cluster.progress import TIMINGS


@pytest.fixture(autouse=True)
def fresh_timings() -> None:
    TIMINGS.phases.clear()

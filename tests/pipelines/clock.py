"""A clock the delivery tests move by hand (the retry schedules, the leases), never by sleeping."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from export_core.records import utcnow


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture(name="clock")
def clock_fixture() -> Clock:
    """Import it into a test module to use it."""
    return Clock()

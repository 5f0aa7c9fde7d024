"""The read-ahead helper of the extract: same items in the same order, errors where they belong, no leftover thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from export_pipelines.exports.sources import prefetched


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name == "prefetch"}


def test_items_arrive_in_order():
    assert list(prefetched(iter(range(1000)), depth=1)) == list(range(1000))
    assert _threads() == set()


def test_an_error_of_the_producer_is_raised_in_the_consumer_after_the_items_before_it():
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise ConnectionResetError("database went away")

    seen = []
    with pytest.raises(ConnectionResetError, match="database went away"):
        for item in prefetched(source()):
            seen.append(item)
    assert seen == [1, 2]
    assert _threads() == set()


def test_a_consumer_that_stops_early_stops_the_producer():
    produced = []
    closed = threading.Event()

    def source() -> Iterator[int]:
        try:
            for number in range(1_000_000):
                produced.append(number)
                yield number
        finally:
            closed.set()

    with pytest.raises(RuntimeError):
        for item in prefetched(source(), depth=1):
            if item == 3:
                raise RuntimeError("the step failed while writing")
    assert closed.wait(5), "the source was closed"
    assert len(produced) <= 6, "the producer stopped reading ahead"
    assert _threads() == set()

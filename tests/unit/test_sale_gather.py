"""How the sale writer takes a batch (portal/salewriter.py ``SaleWriter._take``): a lone sale on
a quiet server goes at once; under load the batch waits a little for the sales still on their
way (``SALE_GATHER_MS``), up to a quiet gap, twice that in all, or a full batch.

The queue is filled by hand (no writer thread, no database): only the taking is under test.
The time bounds are generous on purpose; each test's own waits are far apart from them."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from portal.salewriter import Sale, SaleWriter

RECEIVED = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _writer(gather_ms: float, batch_size: int = 32) -> SaleWriter:
    config = {
        "SALE_WRITE_MODE": "batched",
        "SALE_BATCH_SIZE": batch_size,
        "SALE_WRITERS": 1,
        "SALE_WRITE_TIMEOUT_SECONDS": 30.0,
        "SALE_GATHER_MS": gather_ms,
    }
    return SaleWriter(SimpleNamespace(config=config))


def _arrive(writer: SaleWriter, count: int = 1) -> list[Sale]:
    """Sales queued as ``record`` queues them (without waiting for an answer)."""
    sales = [Sale(data=None, raw={}, received_at=RECEIVED, answer=dict) for _ in range(count)]
    with writer._ready:
        writer._queue.extend(sales)
        writer._ready.notify()
    return sales


def _arrive_later(writer: SaleWriter, delays: list[float]) -> threading.Thread:
    """One sale after each of ``delays`` (seconds, each from the one before)."""

    def run():
        for delay in delays:
            time.sleep(delay)
            _arrive(writer)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _timed_take(writer: SaleWriter) -> tuple[list[Sale], float]:
    began = time.monotonic()
    sales = writer._take()
    return sales, time.monotonic() - began


def test_a_lone_sale_on_a_quiet_writer_is_taken_at_once():
    writer = _writer(gather_ms=5_000)
    _arrive(writer)
    sales, took = _timed_take(writer)
    assert len(sales) == 1
    assert took < 1.0  # not the 5 s a busy batch may wait for a quiet gap


def test_sales_that_come_together_wait_for_the_ones_still_on_their_way():
    writer = _writer(gather_ms=1_000)
    first = _arrive(writer, 2)
    later = _arrive_later(writer, [0.05, 0.05, 0.05])
    sales, took = _timed_take(writer)
    later.join()
    assert sales[:2] == first
    assert len(sales) == 5  # the three that came within the gap joined the two
    assert took >= 0.15


def test_a_quiet_gap_ends_the_gathering():
    writer = _writer(gather_ms=1_000)
    _arrive(writer, 2)
    sales, took = _timed_take(writer)
    assert len(sales) == 2
    assert 0.9 <= took < 1.8  # one gap of 1 s, not the 2 s cap


def test_a_steady_trickle_is_cut_at_twice_the_gap():
    writer = _writer(gather_ms=500)
    _arrive(writer, 2)
    trickle = _arrive_later(writer, [0.1] * 30)  # a sale every 0.1 s for 3 s: never a gap
    sales, took = _timed_take(writer)
    # The 1 s cap: without it the batch would fill (32) only as the trickle ends, at 3 s.
    assert 0.9 <= took < 2.5
    assert 4 <= len(sales) < 30
    trickle.join()


def test_a_full_batch_does_not_wait():
    writer = _writer(gather_ms=5_000, batch_size=4)
    queued = _arrive(writer, 6)
    sales, took = _timed_take(writer)
    assert sales == queued[:4]
    assert took < 1.0
    assert list(writer._queue) == queued[4:]  # the rest go first in the next batch


def test_the_batch_after_a_busy_one_gathers_even_when_it_begins_with_one_sale():
    writer = _writer(gather_ms=1_000)
    _arrive(writer, 3)
    assert len(writer._take()) == 3  # waited out its gap: nothing more came
    _arrive(writer)
    later = _arrive_later(writer, [0.05])
    sales, _took = _timed_take(writer)
    later.join()
    assert len(sales) == 2  # the load goes on: the lone sale waited for the next


@pytest.mark.parametrize("gather_ms", [0, -5])
def test_without_gathering_what_is_queued_goes_at_once(gather_ms):
    writer = _writer(gather_ms=gather_ms)
    _arrive(writer, 3)
    later = _arrive_later(writer, [0.5])
    sales, took = _timed_take(writer)
    later.join()
    assert len(sales) == 3
    assert took < 0.5

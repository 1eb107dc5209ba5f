"""Group commit for the conversion API: the sales of concurrent requests written by one
thread per process, many in one transaction.

A sale costs a few statements of its own (its insert, which also reads the partner's tier
counters, and its commission lines), and a transaction costs more around them: a connection
from the pool (and its pre-ping), SQLite's writer gate or PostgreSQL's partner lock, the
rollup upserts and the commit. Written one request at a time, that fixed part was most of a
sale's cost and all of SQLite's waiting. Here the request thread validates the body and
hands the sale over (``record``); the writer takes every sale waiting (up to
``SALE_BATCH_SIZE``; under load, after letting the batch fill for a moment: ``_gather``,
``SALE_GATHER_MS``) and, in one transaction (the sales that arrive while it waits for its
turn at the write lock join it once the turn is its own):

1. decides each sale as ``tracking.record_conversion`` does (attribution, window, currency,
   screening: reads only). A sale whose partner (or transaction id) already has a sale in
   this batch waits for the next batch, so each sale still reads the counters of every
   earlier sale of its partner (its tier), exactly as if they had come one after the other;
2. takes the partners' locks (PostgreSQL), all at once and in ascending order, so two
   processes' batches never wait for each other in a circle;
3. reads every partner's tier counters in one SELECT, stores every sale in one INSERT
   (``tracking.write_conversions``), earns each one's lines and builds its answer;
4. writes the rollups of the whole batch in one go (rows sorted: the same lock order
   everywhere) and commits. Only then are the answers given.

Nothing is half-saved: a batch commits whole or not at all. When a batch fails, it is
rolled back and each of its requests writes its sale alone in its own transaction
(``Outcome.ALONE``), as ``SALE_WRITE_MODE=inline`` always does, so one bad sale costs the
others a retry, never their answer; when the database cannot be reached, each request
answers 503 at once, as every request does in an outage. A sale refused on its own (a
``DomainError``: over the maximum, a transaction id reported before with other details)
writes nothing and goes back to its request, which decides it again and answers in the
client's language. A request that waits longer than
``SALE_WRITE_TIMEOUT_SECONDS`` is answered 503 (its sale may still be written: the client's
retry with the same transaction id is then answered from it).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import Flask

from portal import osthreads
from portal.database import begin_write, lock_partners
from portal.errorpages import database_unavailable
from portal.errors import DomainError
from portal.extensions import db
from portal.services import outbox, tracking
from portal.services.program import cached_program

log = logging.getLogger(__name__)

# The answer a request gives for its stored (or earlier) conversion, built before the commit.
Answer = Callable[[Any], dict]


class Outcome:
    WRITTEN = "written"  # ``payload`` and ``created`` hold the request's answer
    FAILED = "failed"  # the database could not be reached: ``error`` is the request's answer (503)
    # Not written by the batch: the request writes its sale itself, in its own transaction
    # (the batch failed, or the sale was refused — a 409 or 422 — and is decided again by its
    # request, which answers in the client's language).
    ALONE = "alone"


@dataclass
class Sale:
    """One request's sale, waiting for the writer."""

    data: Any  # tracking.ConversionInput
    raw: dict
    received_at: datetime
    answer: Answer
    done: threading.Event = field(default_factory=threading.Event)
    outcome: str = Outcome.ALONE
    payload: dict | None = None
    created: bool = False
    error: Exception | None = None

    def finish(self, outcome: str, *, payload=None, created=False, error=None) -> None:
        self.outcome, self.payload, self.created, self.error = outcome, payload, created, error
        self.done.set()


class WriterTimeout(Exception):
    """The writer did not answer in time (the database is slow or down)."""


class SaleWriter:
    def __init__(self, app: Flask):
        self.app = app
        self.batched = app.config["SALE_WRITE_MODE"] == "batched"
        self.max_batch = app.config["SALE_BATCH_SIZE"]
        self.writers = app.config["SALE_WRITERS"]
        self.timeout = app.config["SALE_WRITE_TIMEOUT_SECONDS"]
        self.gather = max(app.config["SALE_GATHER_MS"], 0) / 1000
        self._last_batch = 0  # how many sales the last batch was taken with
        self._queue: deque[Sale] = deque()
        self._ready = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._pid = os.getpid()

    def record(self, data, raw: dict, received_at: datetime, answer: Answer) -> Sale:
        """Hand a sale to the writer and wait for it; the returned sale says what came of it."""
        sale = Sale(data=data, raw=raw, received_at=received_at, answer=answer)
        with self._ready:
            self._ensure_thread()
            self._queue.append(sale)
            self._ready.notify()
        if not sale.done.wait(self.timeout):
            raise WriterTimeout(f"no answer from the sale writer within {self.timeout} s")
        return sale

    def _ensure_thread(self) -> None:
        if os.getpid() != self._pid:  # forked: the parent's thread and queue are not ours
            self._pid = os.getpid()
            self._queue.clear()
            self._threads = []
        self._threads = [thread for thread in self._threads if thread.is_alive()]
        while len(self._threads) < self.writers:
            thread = osthreads.Thread(target=self._run, name=f"sale-writer-{len(self._threads)}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _take(self) -> list[Sale]:
        with self._ready:
            while not self._queue:
                self._ready.wait()
            sales = self._popleft(self.max_batch)
            if self._busy(len(sales)):
                self._gather(sales)
            self._last_batch = len(sales)
            return sales

    def _busy(self, queued: int) -> bool:
        """Whether sales come in together: more than one was waiting, now or for the last
        batch. A lone sale on a quiet server is written at once, never kept waiting."""
        return self.gather > 0 and (queued > 1 or self._last_batch > 1)

    def _gather(self, sales: list[Sale]) -> None:
        """Under load, let the batch fill (holding ``_ready``'s lock, released while it
        waits): the answers of the last batch come back as new sales within a few
        milliseconds, and a fuller batch costs the database and this process less per sale
        (README, *Gathering a batch*). It takes what arrives until the batch is full, no sale
        came for ``gather`` seconds, or twice that has passed."""
        deadline = time.monotonic() + 2 * self.gather
        while len(sales) < self.max_batch:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if not self._queue and not self._ready.wait(min(left, self.gather)):
                return  # a quiet gap: nothing more is coming soon
            sales.extend(self._popleft(self.max_batch - len(sales)))

    def _popleft(self, room: int) -> list[Sale]:
        return [self._queue.popleft() for _ in range(min(len(self._queue), room))]

    def _take_arrived(self, room: int) -> list[Sale]:
        """Without waiting: up to ``room`` sales queued since the batch was taken."""
        if room <= 0:
            return []
        with self._ready:
            return self._popleft(room)

    def _give_back(self, sales: list[Sale]) -> None:
        """Sales that wait for the next batch go first in it, in their order."""
        if not sales:
            return
        with self._ready:
            self._queue.extendleft(reversed(sales))

    def _run(self) -> None:
        while True:
            sales = self._take()
            self._give_back(self.run_batch(sales))  # after the batch ended: none written twice

    def run_batch(self, sales: list[Sale]) -> list[Sale]:
        """One batch in its own app context and session; returns the sales left for the next."""
        try:
            with self.app.app_context():
                try:
                    return self.write(sales)
                finally:
                    db.session.remove()
        except Exception as error:  # noqa: BLE001 - the thread must outlive any one failure
            self._failed(sales, error)
            return []

    @staticmethod
    def _failed(sales: list[Sale], error: Exception) -> None:
        """A batch that failed wrote nothing. When the database cannot be reached, each
        request answers 503 as any request does in an outage (no second wait for it);
        otherwise each request writes its sale alone."""
        outage = database_unavailable(error)
        if not outage:
            log.exception("sale writer: a batch of %d sales failed; each is written alone", len(sales))
        for sale in sales:
            if not sale.done.is_set():
                if outage:
                    sale.finish(Outcome.FAILED, error=error)
                else:
                    sale.finish(Outcome.ALONE)

    def write(self, sales: list[Sale]) -> list[Sale]:
        """Write ``sales`` in one transaction (in an app context). Each is finished, but those
        whose partner already has a sale in this batch: returned, for the next batch."""
        program = cached_program()
        batch: list[tuple[Sale, tracking.PreparedSale]] = []
        partners: set[int] = set()
        transaction_ids: set[str] = set()
        later: list[Sale] = []

        def prepare(arrived: list[Sale]) -> None:
            for sale in arrived:
                try:
                    prepared = tracking.prepare_conversion(
                        program, sale.data, sale.raw, received_at=sale.received_at
                    )
                except DomainError:
                    # Its own refusal (wrote nothing): decided again in its request, which
                    # answers in the client's language.
                    sale.finish(Outcome.ALONE)
                    continue
                partner_id = prepared.earning_partner_id
                transaction_id = prepared.conversion.transaction_id
                if partner_id in partners or transaction_id in transaction_ids:
                    later.append(sale)  # the next batch reads what this one writes
                    continue
                if partner_id is not None:
                    partners.add(partner_id)
                transaction_ids.add(transaction_id)
                batch.append((sale, prepared))

        prepare(sales)
        if not batch:
            db.session.rollback()
            return later
        written: list[tuple[Sale, Any, bool]] = []
        refused: list[Sale] = []  # answered by their requests (409), after the commit
        # Anything raised from here on ends the batch with nothing written (``_failed``).
        begin_write(db.session())
        # The turn is ours (SQLite: the writer gate and the write lock, often after a wait
        # for the other processes' batches): the sales that arrived meanwhile join this batch
        # rather than wait for the next turn. Added to ``sales``, so a failure answers them too.
        arrived = self._take_arrived(self.max_batch - len(sales))
        sales.extend(arrived)
        prepare(arrived)
        lock_partners(db.session(), partners)
        together = tracking.SaleBatch()
        outcomes = tracking.write_conversions(program, [prepared for _sale, prepared in batch], together)
        for (sale, _prepared), outcome in zip(batch, outcomes, strict=True):
            if outcome is None:  # a retry with other details (a Conflict): nothing written
                refused.append(sale)
            else:
                written.append((sale, *outcome))
        together.finish(program)
        # The answers before the commit: nothing to load again afterwards.
        answers = [(sale, sale.answer(conversion), created) for sale, conversion, created in written]
        db.session.commit()
        try:
            # Wake the dispatcher (OUTBOX_DISPATCH_MODE=inline: dispatch now, before the
            # answers, as an inline request does before it answers).
            outbox.kick_if_ready(db.session())
        finally:
            for sale, payload, created in answers:
                sale.finish(Outcome.WRITTEN, payload=payload, created=created)
            for sale in refused:
                sale.finish(Outcome.ALONE)
        return later


def init_app(app: Flask) -> SaleWriter:
    writer = SaleWriter(app)
    app.extensions["sale_writer"] = writer
    return writer

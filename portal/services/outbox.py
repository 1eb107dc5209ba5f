"""The outbox dispatcher: hands each committed event to every consumer, at least once.

Consumers, each with its own position (``outbox_consumers``):

* ``messages`` — automatic messages (``lifecycle.handle_event``), with their e-mail copy
  in the e-mail outbox and their live event, in one transaction;
* ``live`` — Socket.IO events for the pages that show what changed;
* ``webhooks`` — one delivery row per enabled endpoint that wants the type; the HTTP
  requests follow (``webhooks.send_due``).

Each event is handled in a savepoint together with a receipt (consumer, event id), up to
``BATCH`` events per transaction: a second handling of the same event fails on the receipt's
primary key, so an effect written to the database happens once even if two dispatchers race.
An event whose handling writes nothing (every event of ``live``; a sale that is not a
partner's first, for ``messages``) gets no receipt and no savepoint, and a batch of only
such events takes no write turn: the pass remembers their ids until it moves the position.
A consumer is run by one dispatcher at a time (a lease on its row, taken with one
UPDATE … WHERE the lease is free — the same on SQLite and PostgreSQL). The position is
the low-water mark: every event at or below it is handled, and receipts at or below it
are deleted. An id the consumer has not seen may belong to a transaction still running
(ids are taken before commit), so the position passes a gap in the ids only once the
event after the gap is older than ``GAP_HORIZON``.

It runs after each commit that wrote events (in the request's process: inline in tests,
on a background thread otherwise) and from ``flask portal run-triggers``, which picks up
anything left behind (a crash, a stopped process).
"""

from __future__ import annotations

import bisect
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from portal import osthreads
from portal.database import begin_write, dialect_insert
from portal.extensions import db
from portal.models import OutboxConsumer, OutboxEvent, OutboxReceipt
from portal.models.types import utcnow
from portal.services.events import WRITTEN_KEY

log = logging.getLogger("portal.outbox")

_EVENTS = OutboxEvent.__table__
LEASE = timedelta(seconds=60)
GAP_HORIZON = timedelta(minutes=10)
RETRY_SKIPPED_SECONDS = 0.2
# OUTBOX_DISPATCH_MODE=inline (the tests): passes a request makes before it gives up.
INLINE_ATTEMPTS = 5
BATCH = 50  # events handled per transaction
# Events a pass reads per consumer. A pass that reached it leaves the rest to the next pass,
# which the background dispatcher then starts by itself (``Dispatcher._pass``) and
# ``run-triggers`` runs in the same job (``drain``): a burst never waits for the next commit.
# Passes under a steady load come about a second apart (``next_delay``), so this is about
# the events a second the dispatcher keeps up with: the conversion bench's ~600 sales a
# second write ~1,900 (a sale and its two commission lines). At 500 the live updates fell
# further behind with every second of such a load.
PASS_LIMIT = 5000
_READY_KEY = "portal_outbox_ready"


def _messages(event: OutboxEvent) -> None:
    from portal.services import lifecycle

    lifecycle.handle_event(event)


def _messages_together(events: list[OutboxEvent]) -> None:
    from portal.services import lifecycle

    lifecycle.handle_events(events)


def _messages_want(event_type: str) -> bool:
    from portal.services import lifecycle

    return lifecycle.handles(event_type)


def _messages_pass_over(event: OutboxEvent) -> bool:
    from portal.services import lifecycle

    return lifecycle.passes_over(event)


def _messages_preload(events: list[OutboxEvent]) -> list:
    from portal.services import lifecycle

    return lifecycle.preload(events)


def _live(event: OutboxEvent) -> None:
    from portal.services import live

    live.handle_event(event)


def _live_wants(event_type: str) -> bool:
    from portal.services import live

    return live.handles(event_type)


def _webhooks(event: OutboxEvent) -> None:
    from portal.services import webhooks

    webhooks.enqueue(event)


def _webhooks_want(event_type: str) -> bool:
    from portal.services import webhooks

    return webhooks.wanted(event_type)


@dataclass(frozen=True)
class Consumer:
    """What a consumer does with an event, and which event types it acts on at all.

    ``wants`` is asked inside the dispatching transaction. An event a consumer does not want
    costs it nothing: no receipt, no savepoint, no handler; the position passes over it. For
    webhooks the answer follows the endpoints (asked again when the position moves, so an
    endpoint added meanwhile is not passed over)."""

    handle: Callable[[OutboxEvent], None]
    wants: Callable[[str], bool]
    # A consumer that writes nothing to the database (live) needs no savepoint, receipt or
    # write turn for its events (``_quiet``).
    writes: bool = True
    # An event the consumer would do nothing with, told without a query: handled without a
    # receipt, a savepoint or a call (``_quiet``).
    passes_over: Callable[[OutboxEvent], bool] | None = None
    # Reads what handling a batch of events will read, a few queries for the whole batch,
    # before the write turn (SQLite: the one write lock is then held for the writes, not
    # these reads); returns the loaded rows, kept while the batch runs (the session holds
    # them weakly). What it learns may make ``passes_over`` true for more of the events.
    preload: Callable[[list[OutboxEvent]], list] | None = None
    # Handles several events at once, cheaper than one by one (messages: a few statements
    # for all their messages). Tried first in one savepoint for a batch's writing events; if
    # it fails, the batch is handled one event at a time, each in its own savepoint, so a
    # failing event is still kept back alone.
    handle_many: Callable[[list[OutboxEvent]], None] | None = None


# In this order: a message's own ``message.sent`` event is written while ``messages`` runs,
# so ``live`` and ``webhooks`` usually see it in the same pass.
CONSUMERS: dict[str, Consumer] = {
    "messages": Consumer(
        _messages,
        _messages_want,
        passes_over=_messages_pass_over,
        preload=_messages_preload,
        handle_many=_messages_together,
    ),
    "live": Consumer(_live, _live_wants, writes=False),
    "webhooks": Consumer(_webhooks, _webhooks_want),
}


@dataclass
class DispatchReport:
    handled: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    webhooks_sent: int = 0
    skipped: list[str] = field(default_factory=list)  # held by another dispatcher this time
    # Consumers whose pass stopped at its limit: more events may be waiting for them.
    more: list[str] = field(default_factory=list)


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"[:64]


def _take_leases(names: list[str], owner: str) -> dict[str, int]:
    """The consumers of ``names`` whose lease this dispatcher now holds, with their positions
    (which only the lease's holder moves), in one transaction: their rows made if missing
    (INSERT … ON CONFLICT DO NOTHING), then one UPDATE … WHERE the lease is free … RETURNING
    (the same on SQLite and PostgreSQL). When another dispatcher holds every one of them, one
    SELECT says so and nothing is written (on SQLite no turn at the write lock)."""
    now = utcnow()
    leases = db.session.execute(
        sa.select(OutboxConsumer.name, OutboxConsumer.lease_owner, OutboxConsumer.lease_until).where(
            OutboxConsumer.name.in_(names)
        )
    ).all()
    held_elsewhere = {
        name
        for name, lease_owner, lease_until in leases
        if lease_owner not in (None, owner) and lease_until >= now
    }
    if held_elsewhere.issuperset(names):
        db.session.rollback()
        return {}
    begin_write(db.session())
    if len(leases) < len(names):
        insert = dialect_insert(db.session.get_bind().dialect.name, OutboxConsumer.__table__)
        db.session.execute(insert.on_conflict_do_nothing(), [{"name": name, "position": 0} for name in names])
    free = sa.or_(
        OutboxConsumer.lease_until.is_(None),
        OutboxConsumer.lease_until < now,
        OutboxConsumer.lease_owner == owner,
    )
    taken = dict(
        db.session.execute(
            sa.update(OutboxConsumer)
            .where(OutboxConsumer.name.in_(names), free)
            .values(lease_owner=owner, lease_until=now + LEASE)
            .returning(OutboxConsumer.name, OutboxConsumer.position)
            .execution_options(synchronize_session=False)
        ).all()
    )
    db.session.commit()
    return {name: taken[name] or 0 for name in names if name in taken}


def _release_leases(names: list[str], owner: str) -> None:
    db.session.execute(
        sa.update(OutboxConsumer)
        .where(OutboxConsumer.name.in_(names), OutboxConsumer.lease_owner == owner)
        .values(lease_owner=None, lease_until=None)
        .execution_options(synchronize_session=False)
    )


def _position(name: str) -> int:
    return db.session.scalar(sa.select(OutboxConsumer.position).where(OutboxConsumer.name == name)) or 0


class _Window:
    """The events a pass reads, once for all the consumers it holds: the rows past the
    lowest of their positions, in id order, and each consumer's receipts past it. A consumer
    that needs rows beyond what was read (one far ahead of the others, or the events written
    since, such as the messages' own ``message.sent``) reads only those. Before, each
    consumer read the same events three times a pass (what it had not handled, the rows it
    handled, and up to 5,000 rows to move its position over)."""

    def __init__(self, positions: dict[str, int]):
        self.start = min(positions.values(), default=0)
        self.rows: list = []  # every committed event in (start, last] as read, by id
        self.ids: list[int] = []
        self.last = self.start
        self.receipts: dict[str, set[int]] = {name: set() for name in positions}
        if positions:
            rows = db.session.execute(
                sa.select(OutboxReceipt.consumer, OutboxReceipt.event_id).where(
                    OutboxReceipt.consumer.in_(list(positions)), OutboxReceipt.event_id > self.start
                )
            )
            for name, event_id in rows:
                self.receipts[name].add(event_id)

    def past(self, position: int, limit: int) -> tuple[list, bool]:
        """Up to ``limit`` events after ``position`` (at or above ``start``), and whether the
        limit cut them short. The window grows only at its end, so what it holds stays
        every event committed in (start, last] when read; a consumer ahead of it reads its
        own rows, kept out of the window."""
        if position > self.last:
            rows = _events_after(position, limit)
            return rows, len(rows) >= limit
        index = bisect.bisect_right(self.ids, position)
        if len(self.rows) - index < limit:
            more = _events_after(self.last, limit - (len(self.rows) - index))
            if more:
                self.rows.extend(more)
                self.ids.extend(row.id for row in more)
                self.last = more[-1].id
        rows = self.rows[index : index + limit]
        return rows, len(rows) >= limit

    def since(self, position: int) -> list:
        """Every event the window holds after ``position``."""
        return self.rows[bisect.bisect_right(self.ids, position) :]


def _events_after(event_id: int, limit: int) -> list:
    return db.session.execute(
        sa.select(_EVENTS).where(_EVENTS.c.id > event_id).order_by(_EVENTS.c.id).limit(limit)
    ).all()


def _claim(name: str, event_ids: list[int]) -> list[int]:
    """The batch's receipts in one statement; the ids this dispatcher now holds, in order
    (an id whose receipt exists was handled by another dispatcher meanwhile). Executed with
    a list of parameter sets, so the statement is compiled once whatever the batch's size."""
    table = OutboxReceipt.__table__
    dialect = db.session.get_bind().dialect.name
    statement = dialect_insert(dialect, table).on_conflict_do_nothing().returning(table.c.event_id)
    rows = db.session.execute(statement, [{"consumer": name, "event_id": event_id} for event_id in event_ids])
    return sorted(rows.scalars())


def _quiet(consumer: Consumer, event: OutboxEvent) -> bool:
    """Whether handling ``event`` writes nothing: a consumer that never writes (live), or an
    event the consumer passes over. Such an event needs no receipt and no write turn: the
    position passes it at the end of the pass (``_advance``), and if the process stops
    before that, handling it again changes nothing (live: one more "look again")."""
    return not consumer.writes or (consumer.passes_over is not None and consumer.passes_over(event))


def _handle(
    name: str, consumer: Consumer, batch: list, quiet_done: set[int], done: set[int]
) -> tuple[int, bool]:
    """Events in one transaction: the receipts of those whose handling writes first (one
    INSERT; a racing dispatcher's claim stops at the receipts' keys before any effect), then
    the writing ones at once if the consumer can (``Consumer.handle_many``, one savepoint),
    else each event in order, a writing one in a savepoint; (handled, all went well). Events whose
    handling writes nothing (``_quiet``) get no receipt: their ids go to ``quiet_done``, which
    ``_advance`` counts as handled. A batch of only those takes no write turn at all. The ids
    whose receipts it committed go to ``done``.

    One transaction for a batch, not one per event: on SQLite every transaction waits its
    turn for the one write lock the API also needs. A failing event is rolled back alone, and
    its receipt with those after it: those before it are kept, the rest wait for the next
    dispatch."""
    handled = 0
    try:
        # The events (read by the pass: plain rows, not ORM objects; the consumers read only
        # the columns, and a live pass hands on thousands of them), and what the consumer
        # reads for them, first: one read transaction. Then the write turn (SQLite:
        # ``begin_write`` ends the read snapshot and waits for the write lock, keeping what
        # was loaded; a transaction that went on from its read snapshot would fail at once
        # with "database is locked" whenever the API committed in between, instead of
        # waiting its turn).
        events = {event.id: event for event in batch}
        ordered = list(events)
        quiet = {event_id for event_id in ordered if _quiet(consumer, events[event_id])}
        loud = [event_id for event_id in ordered if event_id not in quiet]
        _kept = []
        if loud and consumer.preload is not None:
            _kept = consumer.preload([events[i] for i in loud])
            # What the preload learned can make more of them quiet (messages: sales whose
            # partner has an earlier one).
            quiet.update(event_id for event_id in loud if _quiet(consumer, events[event_id]))
            loud = [event_id for event_id in loud if event_id not in quiet]
        held: set[int] = set()
        if loud:
            begin_write(db.session())
            held = set(_claim(name, loud))
        elif not db.session().in_transaction():
            # A batch that writes nothing (live) still runs in a transaction of its own, so
            # that what it tells the pages queues until the commit below, once per room and
            # kind (``realtime.notify_once``): outside one, each event was sent at once, a
            # publish over Redis (and a message to every worker) per event.
            db.session().begin()
        if len(held) > 1 and consumer.handle_many is not None and _together(name, consumer, events, held):
            quiet_done.update(quiet)
            db.session.commit()
            done.update(held)
            return len(quiet) + len(held), True
        for index, event_id in enumerate(ordered):
            if event_id not in quiet and event_id not in held:
                continue  # claimed by another dispatcher meanwhile
            event = events[event_id]
            try:
                if event_id in quiet:
                    if not consumer.writes:
                        consumer.handle(event)
                    quiet_done.add(event_id)
                else:
                    with db.session.begin_nested():
                        consumer.handle(event)
            except Exception:
                log.exception(
                    "outbox consumer %s failed on event %s; the next dispatch retries it", name, event_id
                )
                db.session.expunge_all()  # as after a batch that failed (``_together``)
                rest = [later for later in ordered[index:] if later in held]
                if rest:
                    db.session.execute(
                        sa.delete(OutboxReceipt).where(
                            OutboxReceipt.consumer == name, OutboxReceipt.event_id.in_(rest)
                        )
                    )
                db.session.commit()
                done.update(held.difference(rest))
                return handled, False
            handled += 1
        db.session.commit()
        done.update(held)
        return handled, True
    except Exception:
        db.session.rollback()
        log.exception(
            "outbox consumer %s failed on events %s…; the next dispatch retries them", name, ordered[0]
        )
        return 0, False


def _together(name: str, consumer: Consumer, events: dict, held: set[int]) -> bool:
    """The held events handled at once (``Consumer.handle_many``) in one savepoint; False,
    with nothing of it kept, if that failed (the caller then goes one event at a time)."""
    try:
        with db.session.begin_nested():
            consumer.handle_many([event for event_id, event in events.items() if event_id in held])
    except Exception:
        message = "outbox consumer %s failed on a batch; handling it one event at a time"
        log.warning(message, name, exc_info=True)
        # The rows it wrote are rolled back, but not the objects the session was given for
        # them as loaded (``stored_as_loaded``): on SQLite the next insert takes the same
        # ids again, which the session would refuse as a second object for one row.
        db.session.expunge_all()
        return False
    return True


def _new_position(name: str, position: int, events: list, handled: set[int]) -> int:
    """Where the position can move over ``events`` (the rows the pass handed the consumer,
    from ``position`` on): over every handled event (a receipt, read by the pass or
    committed by it, or a quiet one), over events the consumer does not want (asked now,
    after the pass's commits: an endpoint added meanwhile is not passed over), and over gaps
    old enough to be rollbacks. Only the lease's holder moves the position or writes
    receipts, so what the pass saw still holds when ``_advance`` writes it."""
    wants = _asked_once(CONSUMERS[name].wants)
    horizon = utcnow() - GAP_HORIZON
    new = position
    for event in events:
        if event.id not in handled and wants(event.type):
            break
        if event.id != new + 1 and event.created_at > horizon:
            break  # a gap: an earlier id may still commit
        new = event.id
    return new


def _asked_once(wants: Callable[[str], bool]) -> Callable[[str], bool]:
    """``wants`` asked once a type (a pass hands on hundreds of events of a few types)."""
    answers: dict[str, bool] = {}

    def asked(event_type: str) -> bool:
        answer = answers.get(event_type)
        if answer is None:
            answer = answers[event_type] = wants(event_type)
        return answer

    return asked


def _advance(name: str, owner: str, position: int, new: int, quiet_done: set[int]) -> None:
    """Move the position from ``position`` to ``new`` (``_new_position``), in the caller's
    transaction. A quiet event the position cannot pass yet (beyond a gap) gets its receipt
    now, so it is not handled again. Nothing moves when the lease ran out and another
    dispatcher holds it now: the receipts are then its own to clear."""
    if new != position:
        moved = db.session.execute(
            sa.update(OutboxConsumer)
            .where(OutboxConsumer.name == name, OutboxConsumer.lease_owner == owner)
            .values(position=new)
            .execution_options(synchronize_session=False)
        ).rowcount
        if not moved:
            return
        db.session.execute(
            sa.delete(OutboxReceipt).where(OutboxReceipt.consumer == name, OutboxReceipt.event_id <= new)
        )
    beyond = sorted(event_id for event_id in quiet_done if event_id > new)
    if beyond:
        table = OutboxReceipt.__table__
        insert = dialect_insert(db.session.get_bind().dialect.name, table).on_conflict_do_nothing()
        db.session.execute(insert, [{"consumer": name, "event_id": event_id} for event_id in beyond])


@dataclass
class _Pass:
    """What one consumer's pass saw and did: the events handed to it (from its position on),
    and the ids it handled (receipts it found or committed, and quiet events)."""

    position: int
    events: list = field(default_factory=list)
    handled: set[int] = field(default_factory=set)
    quiet_done: set[int] = field(default_factory=set)


def _finish(passes: dict[str, _Pass], owner: str) -> None:
    """Advance every consumer this dispatcher ran and give their leases back, in one
    transaction (the new positions worked out from what the pass saw, before its write
    turn); if advancing fails, the leases are still given back (the positions wait, and the
    quiet events are handled again: nothing was written for them)."""
    names = list(passes)
    try:
        moves = {
            name: _new_position(name, run.position, run.events, run.handled | run.quiet_done)
            for name, run in passes.items()
        }
        begin_write(db.session())
        for name, run in passes.items():
            _advance(name, owner, run.position, moves[name], run.quiet_done)
        _release_leases(names, owner)
        db.session.commit()
    except Exception:
        db.session.rollback()
        log.exception("outbox: moving the positions of %s failed; the next dispatch does it", names)
        begin_write(db.session())
        _release_leases(names, owner)
        db.session.commit()


def _run_held(name: str, run: _Pass, window: _Window, limit: int) -> tuple[int, int, bool]:
    """(handled, failed, cut short by the limit) for one consumer's pass."""
    handled = failed = 0
    consumer = CONSUMERS[name]
    run.events, cut = window.past(run.position, limit)
    receipts = window.receipts[name]
    run.handled.update(receipts)
    wants = _asked_once(consumer.wants)
    pending = [event for event in run.events if event.id not in receipts and wants(event.type)]
    # A consumer that writes nothing takes no write turn: its whole pass is one batch.
    size = BATCH if consumer.writes else max(len(pending), 1)
    for start in range(0, len(pending), size):
        done, ok = _handle(name, consumer, pending[start : start + size], run.quiet_done, run.handled)
        handled += done
        if not ok:
            failed += 1
            break  # keep the order: the rest waits for the next dispatch
    return handled, failed, cut and not failed  # a failure waits for the next dispatch anyway


def run_consumers(
    names: list[str], limit: int = PASS_LIMIT, owner: str | None = None, more: set[str] | None = None
) -> dict[str, tuple[int, int]]:
    """Hand up to ``limit`` events to each consumer of ``names`` whose lease is free:
    {name: (handled, failed)}; a consumer another dispatcher holds is left out, and the names
    of those whose pass stopped at the limit go into ``more``. Two write transactions for the
    whole pass besides the batches: the leases, then the positions; the events are read once
    for all the consumers (``_Window``)."""
    owner = owner or _owner()
    held = _take_leases(names, owner)
    results: dict[str, tuple[int, int]] = {}
    passes = {name: _Pass(position) for name, position in held.items()}
    try:
        window = _Window(held)
        for name, run in passes.items():
            handled, failed, cut = _run_held(name, run, window, limit)
            results[name] = (handled, failed)
            if cut and more is not None:
                more.add(name)
        for run in passes.values():
            # The position may move over what the window read after the consumer's turn too
            # (the messages' own ``message.sent``, which ``messages`` does not want).
            run.events = window.since(run.position) or run.events
    finally:
        if held:
            _finish(passes, owner)
    return results


def run_consumer(name: str, limit: int = PASS_LIMIT, owner: str | None = None) -> tuple[int, int] | None:
    """Hand up to ``limit`` events to consumer ``name``; (handled, failed), or None if another
    dispatcher holds it."""
    return run_consumers([name], limit, owner).get(name)


def dispatch(limit: int | None = None, send: bool = True) -> DispatchReport:
    """Run every consumer once (up to ``limit``, else ``PASS_LIMIT``, events each), then send
    the due webhooks and the e-mails just written."""
    from portal.services import delivery, webhooks

    report = DispatchReport()
    db.session.commit()  # start from a clean transaction: what the caller wrote is committed
    more: set[str] = set()
    results = run_consumers(list(CONSUMERS), limit or PASS_LIMIT, more=more)
    report.more = sorted(more)
    for name in CONSUMERS:
        if name in results:
            report.handled[name], report.failed[name] = results[name]
        else:
            report.skipped.append(name)
    if send:
        report.webhooks_sent = webhooks.send_due()
        delivery.send_ready()
    return report


def waiting(name: str) -> int:
    """How many events consumer ``name`` has not handled yet (the console, health)."""
    position = _position(name)
    wants = CONSUMERS[name].wants
    counts = db.session.execute(
        sa.select(OutboxEvent.type, sa.func.count())
        .where(OutboxEvent.id > position)
        .where(~sa.exists().where(OutboxReceipt.consumer == name, OutboxReceipt.event_id == OutboxEvent.id))
        .group_by(OutboxEvent.type)
    ).all()
    return sum(count for event_type, count in counts if wants(event_type))


# --- running right after a commit -------------------------------------------------------------


@sa_event.listens_for(Session, "after_commit")
def _ready_after_commit(session: Session) -> None:
    if session.info.pop(WRITTEN_KEY, None):
        session.info[_READY_KEY] = True


@sa_event.listens_for(Session, "after_soft_rollback")
def _drop_after_rollback(session: Session, previous_transaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(WRITTEN_KEY, None)


class Dispatcher:
    """One thread per process that dispatches soon after a commit wrote events.

    Started on first use (after gunicorn forks). ``kick()`` wakes it; several kicks while it
    works make one more pass, not one each. A stopped process leaves nothing behind that
    ``run-triggers`` does not pick up: the events are rows.
    """

    def __init__(self, app):
        self.app = app
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def kick(self) -> None:
        self._wake.set()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = osthreads.Thread(target=self._run, name="outbox-dispatcher", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        delay = self.app.config["OUTBOX_DISPATCH_DELAY_MS"] / 1000
        while True:
            self._wake.wait()
            delay = self._pass(delay)

    def _pass(self, delay: float) -> float:
        """One pass after ``delay``; returns the delay before the next."""
        base = self.app.config["OUTBOX_DISPATCH_DELAY_MS"] / 1000
        # Let a burst gather: one pass for the events of many requests (each pass costs a
        # few write transactions per consumer whatever it carries).
        time.sleep(delay)
        self._wake.clear()
        try:
            with self.app.app_context():
                try:
                    report = dispatch()
                finally:
                    db.session.remove()
            if report.skipped:
                # Another process held a consumer: it may have started before this kick's
                # events committed. Look again shortly rather than leave them to cron.
                time.sleep(RETRY_SKIPPED_SECONDS)
                self._wake.set()
            if report.more:
                # The pass stopped at its limit: go on with the rest without waiting for
                # another commit's kick (after a burst there may be none until cron).
                self._wake.set()
            return next_delay(base, report)
        except Exception:  # the thread must outlive any one failure
            self.app.logger.exception("outbox dispatch failed; run-triggers will pick the events up")
            return base


# After a pass that carried at least BATCH events for a consumer (a steady load, not a few
# sales), the next one waits this many times OUTBOX_DISPATCH_DELAY_MS: fewer, larger passes,
# so less of SQLite's write lock and of the process's CPU for the same events.
BUSY_FACTOR = 4


def next_delay(base: float, report: DispatchReport) -> float:
    """How long the background dispatcher lets events gather before its next pass: four
    times the base after a busy one. A pass that stopped at its limit is busy too: the next
    one follows without a new commit's kick, but not sooner: under a steady load the
    dispatcher takes no more of the CPU from the sales than before it woke itself."""
    busy = any(handled >= BATCH for handled in report.handled.values())
    return base * BUSY_FACTOR if busy else base


# ``run-triggers`` goes on while passes stop at their limit, up to this many passes (a
# backlog of up to PASS_LIMIT × DRAIN_PASSES events per consumer in one job).
DRAIN_PASSES = 200


def drain() -> DispatchReport:
    """Dispatch until no consumer's pass stops at its limit (bounded by ``DRAIN_PASSES``):
    what ``run-triggers`` runs, so a backlog is handled in one job, not 500 events a job.
    Returns the passes' reports summed."""
    total = DispatchReport()
    for _ in range(DRAIN_PASSES):
        report = dispatch()
        for name, count in report.handled.items():
            total.handled[name] = total.handled.get(name, 0) + count
        for name, count in report.failed.items():
            total.failed[name] = total.failed.get(name, 0) + count
        total.webhooks_sent += report.webhooks_sent
        total.skipped, total.more = report.skipped, report.more
        if not report.more:
            break
    return total


def newest_event_id() -> int:
    """The highest event id committed so far (0 for none): one look at the primary key."""
    return db.session.scalar(sa.select(sa.func.max(_EVENTS.c.id))) or 0


def follow(app, stop: threading.Event | None = None, clock=time.monotonic) -> None:
    """The dispatcher process (``OUTBOX_DISPATCH_MODE=process``, ``flask portal dispatcher``):
    every OUTBOX_DISPATCH_DELAY_MS it looks whether an event was committed since its last
    pass (one read of the newest id) and, if so, dispatches, sending right after the pass
    what it made due (webhooks, e-mails), as the background dispatcher does; a pass that
    stopped at its limit or found a consumer held elsewhere is followed by another without
    waiting for new events. The web workers then neither dispatch nor wake anything after a
    commit: their processes keep their CPU and GIL for the requests. Webhook retries and
    e-mails also come due by time, so a look without a pass sends them every ``SEND_EVERY``
    seconds. Runs until ``stop`` is set; no failure ends it."""
    base = app.config["OUTBOX_DISPATCH_DELAY_MS"] / 1000
    stop = stop or threading.Event()
    seen, delay, again, sent_at = -1, base, False, clock()
    while not stop.wait(delay):
        try:
            with app.app_context():
                try:
                    newest = newest_event_id()
                    db.session.rollback()
                    now = clock()
                    if newest != seen or again:
                        report = dispatch()
                        seen, again, sent_at = newest, bool(report.more or report.skipped), now
                        delay = next_delay(base, report) if not report.skipped else RETRY_SKIPPED_SECONDS
                    else:
                        delay = base
                        if now - sent_at >= SEND_EVERY:
                            from portal.services import delivery, webhooks

                            webhooks.send_due()
                            delivery.send_ready()
                            sent_at = now
                finally:
                    db.session.remove()
        except Exception:  # the process must outlive any one failure
            app.logger.exception("outbox dispatch failed; the next look tries again")
            delay = base


# How often the dispatcher process sends the webhooks and e-mails that came due by time.
SEND_EVERY = 5.0


def kick_if_ready(session=None) -> None:
    """After a commit that wrote events: dispatch now (inline) or wake this process's dispatcher."""
    session = session or db.session()
    if not session.info.pop(_READY_KEY, None):
        return
    mode = current_app.config["OUTBOX_DISPATCH_MODE"]
    if mode == "inline":
        # The request's own events, before it answers. A consumer another request holds right
        # now (or a lock that timed out) is tried again a few times, as the background
        # dispatcher would: inline mode has no later pass but run-triggers.
        for attempt in range(INLINE_ATTEMPTS):
            try:
                if not dispatch().skipped:
                    return
            except Exception:
                db.session.rollback()
                if attempt == INLINE_ATTEMPTS - 1:
                    message = "outbox dispatch failed; run-triggers will pick the events up"
                    current_app.logger.exception(message)
                    return
            time.sleep(RETRY_SKIPPED_SECONDS)
    elif mode == "background":
        current_app.extensions["outbox_dispatcher"].kick()
    # "process": the dispatcher process (``follow``) finds the events by itself; "off": cron.


MODES = ("background", "process", "inline", "off")


def init_app(app) -> None:
    mode = app.config["OUTBOX_DISPATCH_MODE"]
    if mode not in MODES:
        raise RuntimeError(f"OUTBOX_DISPATCH_MODE must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "process" and not app.config.get("REDIS_URL"):
        # The dispatcher process emits the live events; only Redis carries them to the
        # workers that hold the pages' sockets.
        raise RuntimeError(
            "OUTBOX_DISPATCH_MODE=process needs REDIS_URL: the dispatcher process's live events "
            "reach the pages through it (see README: Events and webhooks)."
        )
    app.extensions["outbox_dispatcher"] = Dispatcher(app)

    @app.after_request
    def dispatch_committed_events(response):
        if db.session.registry.has():
            kick_if_ready()
        return response

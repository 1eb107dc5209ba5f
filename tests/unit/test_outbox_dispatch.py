"""The dispatcher's bookkeeping (portal/services/outbox.py), on SQLite and PostgreSQL: what a
consumer does not want costs it nothing, leases are taken together and respected, and a
sale's live updates reach its partner once per kind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import time_machine

from portal.models import Conversion, OutboxConsumer, OutboxEvent, OutboxReceipt, WebhookDelivery
from portal.services import outbox, tracking, webhooks
from portal.services.tracking import ConversionInput
from tests.factories import PartnerFactory
from tests.statements import reads_of, statements_during

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def sell(program, partner, transaction_id: str):
    data = ConversionInput(transaction_id, 10_000, program.currency, ref=partner.ref_code)
    conversion = tracking.record_conversion(program, data, {"transaction_id": transaction_id})[0]
    return conversion


def sale_ready_to_dispatch(db, program, partner, transaction_id: str):
    """The partner's sale, committed, every consumer's position just before its events."""
    conversion = sell(program, partner, transaction_id)
    db.session.commit()
    start_at_the_first_event(db)
    return conversion


def first_sales_ready(db, program, count: int, prefix: str) -> list:
    """``count`` new partners (distinct names), each with a first sale, committed, every
    consumer's position just before their events."""
    from portal.models import AutomaticKind
    from portal.services import lifecycle

    sellers = [PartnerFactory(user__name=f"Seller {prefix} {index}") for index in range(count)]
    for kind in AutomaticKind:  # stored, as after each kind's first use
        lifecycle.get_template(kind)
    db.session.commit()
    for index, partner in enumerate(sellers):
        sell(program, partner, f"{prefix}-{index}")
    db.session.commit()
    start_at_the_first_event(db)
    return sellers


def messages_failing_on(monkeypatch, event_id: int) -> None:
    """The messages consumer, failing on the event ``event_id`` every time (one at a time)."""
    real = outbox.CONSUMERS["messages"]

    def fail_on_it(event):
        if event.id == event_id:
            raise RuntimeError("the mail template is broken")
        real.handle(event)

    monkeypatch.setitem(outbox.CONSUMERS, "messages", outbox.Consumer(fail_on_it, real.wants))


def two_more_sales_after_a_known_one(db, program, partner, prefix: str) -> None:
    """After the partner's first sale was dispatched: a second one, dispatched (the messages
    consumer looks at it, finds the earlier sale and remembers it), then two more, committed
    and not dispatched yet."""
    sell(program, partner, f"{prefix}-2")
    db.session.commit()
    outbox.dispatch(send=False)
    sell(program, partner, f"{prefix}-3")
    sell(program, partner, f"{prefix}-4")
    db.session.commit()


def positions(db) -> dict[str, int]:
    return dict(db.session.execute(sa.select(OutboxConsumer.name, OutboxConsumer.position)).all())


def newest_event(db) -> int:
    return db.session.scalar(sa.select(sa.func.max(OutboxEvent.id)))


def start_at_the_first_event(db) -> None:
    """Every consumer's position just before this test's first event. (PostgreSQL's ids go on
    from earlier, rolled-back tests; a position of 0 would stop at that gap, as at one left by
    a transaction still running, for GAP_HORIZON.)"""
    first = db.session.scalar(sa.select(sa.func.min(OutboxEvent.id)))
    for name in outbox.CONSUMERS:
        db.session.merge(OutboxConsumer(name=name, position=first - 1))
    db.session.commit()


@pytest.fixture
def emitted(monkeypatch) -> list[tuple[str, object]]:
    from portal import realtime

    seen: list[tuple[str, object]] = []
    monkeypatch.setattr(realtime.socketio, "emit", lambda name, payload, to=None: seen.append((name, to)))
    return seen


def test_each_consumer_passes_over_what_it_does_not_want_without_a_receipt(db, program, emitted):
    partner = PartnerFactory()
    db.session.commit()
    with time_machine.travel(NOW, tick=False):
        sale_ready_to_dispatch(db, program, partner, "D-1")
        types = [t for (t,) in db.session.execute(sa.select(OutboxEvent.type).order_by(OutboxEvent.id))]
        assert types.count("commission.created") >= 1 and types[0] == "conversion.created"
        report = outbox.dispatch(send=False)
    # messages: the conversion only (a commission line calls for no message); live: every
    # event of the sale; webhooks: nothing, as no endpoint exists.
    assert report.handled["messages"] == types.count("conversion.created")
    assert report.handled["live"] == len([t for t in types if t.startswith(("conversion.", "commission."))])
    assert report.handled["webhooks"] == 0
    assert positions(db) == dict.fromkeys(outbox.CONSUMERS, newest_event(db))
    assert db.session.scalar(sa.select(sa.func.count()).select_from(OutboxReceipt)) == 0
    for name in outbox.CONSUMERS:
        assert outbox.waiting(name) == 0


def test_a_partners_sales_tell_their_pages_once_per_kind_of_change(db, program, emitted):
    partner = PartnerFactory()
    db.session.commit()
    with time_machine.travel(NOW, tick=False):
        for number in range(3):
            sell(program, partner, f"D-2-{number}")
        db.session.commit()
        start_at_the_first_event(db)
        emitted.clear()
        report = outbox.dispatch(send=False)
    assert report.handled["live"] >= 6  # three conversions and their lines
    to_partner = [name for name, to in emitted if to == f"partner:{partner.id}"]
    # One "look again" per kind for the pass (the pages refetch; more would refetch the same).
    assert to_partner.count("conversion") == 1
    assert to_partner.count("earnings") == 1


def test_an_endpoint_added_later_gets_the_events_after_it(db, program, emitted):
    first, second = PartnerFactory(), PartnerFactory()
    db.session.commit()
    with time_machine.travel(NOW, tick=False):
        sale_ready_to_dispatch(db, program, first, "D-3")
        outbox.dispatch(send=False)  # no endpoint yet: the webhook consumer passes over the sale
        endpoint, _secret = webhooks.create_endpoint(
            "https://hooks.example.com/in", ["conversion.created"], None
        )
        db.session.commit()
        sell(program, second, "D-4")
        db.session.commit()
        report = outbox.dispatch(send=False)
    assert report.handled["webhooks"] == 1  # the second sale's conversion.created, not its lines
    deliveries = db.session.scalars(
        sa.select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
    )
    assert [d.partner_id for d in deliveries] == [second.id]
    assert positions(db)["webhooks"] == newest_event(db)


def test_a_consumer_leased_to_another_dispatcher_is_left_to_it_until_the_lease_runs_out(db, program, emitted):
    partner = PartnerFactory()
    db.session.commit()
    with time_machine.travel(NOW, tick=False):
        sale_ready_to_dispatch(db, program, partner, "D-5")
        before = positions(db)["live"]
        db.session.execute(
            sa.update(OutboxConsumer)
            .where(OutboxConsumer.name == "live")
            .values(lease_owner="another-host:1:1", lease_until=NOW + outbox.LEASE)
        )
        db.session.commit()
        report = outbox.dispatch(send=False)
        assert report.skipped == ["live"]
        assert set(report.handled) == {"messages", "webhooks"}
        assert positions(db)["live"] == before
        assert outbox.waiting("live") >= 2
        assert db.session.get(OutboxConsumer, "live").lease_owner == "another-host:1:1"  # left alone
        assert db.session.get(OutboxConsumer, "messages").lease_owner is None  # given back
    with time_machine.travel(NOW + outbox.LEASE + timedelta(seconds=1), tick=False):
        report = outbox.dispatch(send=False)
    assert report.skipped == []
    assert report.handled["live"] >= 2
    assert positions(db)["live"] == newest_event(db)


def test_a_failing_event_is_kept_for_the_next_dispatch_and_the_ones_before_it_are_not(
    db, program, emitted, monkeypatch
):
    with time_machine.travel(NOW, tick=False):
        first_sales_ready(db, program, 3, "D-6")
        conversions = list(
            db.session.scalars(sa.select(OutboxEvent.id).where(OutboxEvent.type == "conversion.created"))
        )
        real = outbox.CONSUMERS["messages"]
        messages_failing_on(monkeypatch, conversions[1])
        report = outbox.dispatch(send=False)
        assert (report.handled["messages"], report.failed["messages"]) == (1, 1)
        assert conversions[0] < positions(db)["messages"] < conversions[1]
        monkeypatch.setitem(outbox.CONSUMERS, "messages", real)
        report = outbox.dispatch(send=False)
    assert (report.handled["messages"], report.failed["messages"]) == (2, 0)
    assert positions(db)["messages"] == newest_event(db)


def test_a_consumer_stuck_on_a_failing_event_holds_back_no_other_consumer(db, program, emitted, monkeypatch):
    """The pass reads the events once from the lowest position: a consumer that keeps failing
    on one event stays there, and the others, ahead of what the pass read for it, go on
    with rows of their own, pass after pass, to the newest event."""
    with time_machine.travel(NOW, tick=False):
        first_sales_ready(db, program, 4, "D-S")
        stuck_on = db.session.scalar(
            sa.select(sa.func.min(OutboxEvent.id)).where(OutboxEvent.type == "conversion.created")
        )
        messages_failing_on(monkeypatch, stuck_on)
        monkeypatch.setattr(outbox, "PASS_LIMIT", 3)  # fewer than the sales' events
        for _ in range(6):
            report = outbox.dispatch(send=False)
            assert report.failed["messages"] == 1
    assert positions(db)["messages"] == stuck_on - 1
    assert positions(db)["live"] == positions(db)["webhooks"] == newest_event(db)


def test_a_pass_reads_the_events_once_for_all_its_consumers(db, program, emitted):
    """One read of the events from the lowest position for every consumer, and at most one
    more a consumer for what was written since (the messages' own ``message.sent``); the
    positions are moved over what was read, with no read of their own (each consumer read
    the events three times a pass before, once of them up to 5,000 rows)."""
    with time_machine.travel(NOW, tick=False):
        first_sales_ready(db, program, 3, "D-O")
        seen, report = statements_during(db.engine, lambda: outbox.dispatch(send=False))
    assert report.handled["messages"] == 3  # each partner's first sale: congratulated
    assert len(reads_of(seen, "outbox_events")) <= len(outbox.CONSUMERS), [
        seen[i] for i in reads_of(seen, "outbox_events")
    ]
    assert len(reads_of(seen, "outbox_receipts")) == 1
    # The messages' own events are read in the same pass, and every position passes them.
    assert positions(db) == dict.fromkeys(outbox.CONSUMERS, newest_event(db))


def test_sales_after_a_partners_first_cost_the_messages_consumer_no_savepoint(
    db, program, emitted, monkeypatch
):
    """Once this process knows the partner has an earlier counted sale, the automatic-message
    consumer passes over their sales without its savepoint and call; the first sale still
    gets its congratulation."""
    from portal.models import AutomaticKind, Thread
    from portal.services import lifecycle

    called: list[str] = []
    handle = lifecycle.handle_event
    monkeypatch.setattr(lifecycle, "handle_event", lambda event: (called.append(event.type), handle(event)))
    nested = []
    begin_nested = type(db.session()).begin_nested
    monkeypatch.setattr(
        type(db.session()), "begin_nested", lambda self: (nested.append(1), begin_nested(self))[1]
    )
    partner = PartnerFactory()
    db.session.commit()
    with time_machine.travel(NOW, tick=False):
        sale_ready_to_dispatch(db, program, partner, "D-F-1")
        outbox.dispatch(send=False)
        assert called == ["conversion.created"]  # the first: looked at (and congratulated)
        assert nested  # in a savepoint
        two_more_sales_after_a_known_one(db, program, partner, "D-F")
        called.clear()
        nested.clear()
        report = outbox.dispatch(send=False)
    assert report.handled["messages"] == 2
    assert called == []
    assert nested == []
    firsts = db.session.scalars(
        sa.select(Thread).where(
            Thread.partner_id == partner.id, Thread.automatic_kind == AutomaticKind.FIRST_CONVERSION
        )
    ).all()
    assert len(firsts) == 1


@pytest.mark.parametrize("partners", [2, 6])
def test_the_messages_consumer_reads_a_batchs_rows_before_its_write_turn_in_a_few_queries(
    db, program, emitted, partners
):
    """Every partner's first sale calls for a message: the batch's partners (with their
    users), conversions (with their lines) and the templates are read once for the whole
    batch, before the receipts are claimed (on SQLite, before the write lock is taken), and
    each partner is congratulated once."""
    from portal.models import AutomaticKind, Thread
    from portal.services import lifecycle

    sellers = [PartnerFactory() for _ in range(partners)]
    for kind in AutomaticKind:  # stored, as after each kind's first use
        lifecycle.get_template(kind)
    db.session.commit()
    with time_machine.travel(NOW, tick=False):
        for index, partner in enumerate(sellers):
            sell(program, partner, f"D-R-{index}")
        db.session.commit()
        start_at_the_first_event(db)
        seller_ids = sorted(partner.id for partner in sellers)
        db.session.expunge_all()  # nothing loaded before the pass
        seen, _result = statements_during(db.engine, lambda: outbox.run_consumer("messages"))
        db.session.commit()

    claim = next(i for i, sql in enumerate(seen) if sql.startswith("INSERT INTO outbox_receipts"))
    for table in ("partners", "message_templates", "commissions"):
        assert len(reads_of(seen, table)) == 1, (table, [seen[i] for i in reads_of(seen, table)])
        assert reads_of(seen, table)[0] < claim, table
    firsts = db.session.scalars(
        sa.select(Thread.partner_id).where(Thread.automatic_kind == AutomaticKind.FIRST_CONVERSION)
    ).all()
    assert sorted(firsts) == seller_ids


@pytest.fixture
def write_turns(monkeypatch) -> list[str]:
    """The dispatcher's calls for a write turn (on SQLite, the writer gate and the write
    lock), by the function that asked."""
    import sys

    asked: list[str] = []
    real = outbox.begin_write

    def spy(session):
        asked.append(sys._getframe(1).f_code.co_name)
        return real(session)

    monkeypatch.setattr(outbox, "begin_write", spy)
    monkeypatch.setattr(webhooks, "begin_write", spy)
    return asked


def test_a_pass_whose_events_write_nothing_takes_no_write_turn_for_them(db, program, emitted, write_turns):
    """The live consumer writes nothing, and a partner's later sales are passed over by the
    messages consumer: their batches are read and handled without a receipt or a write turn;
    only the leases and the positions are written."""
    partner = PartnerFactory()
    db.session.commit()
    with time_machine.travel(NOW, tick=False):
        sale_ready_to_dispatch(db, program, partner, "D-Q-1")
        outbox.dispatch(send=False)  # the first sale: congratulated (a write turn for it)
        two_more_sales_after_a_known_one(db, program, partner, "D-Q")
        write_turns.clear()
        emitted.clear()
        seen, report = statements_during(db.engine, lambda: outbox.dispatch(send=False))
    assert report.handled["messages"] == 2 and report.handled["live"] >= 4
    assert "_handle" not in write_turns
    assert write_turns == ["_take_leases", "_finish"]
    assert not [sql for sql in seen if sql.startswith("INSERT INTO outbox_receipts")]
    assert ("conversion", f"partner:{partner.id}") in emitted  # live still told the pages
    assert positions(db) == dict.fromkeys(outbox.CONSUMERS, newest_event(db))
    assert db.session.scalar(sa.select(sa.func.count()).select_from(OutboxReceipt)) == 0


def test_quiet_events_beyond_a_gap_are_remembered_and_not_handled_again(db, program, emitted):
    """An id missing before some events (a transaction still running, or one rolled back a
    moment ago) holds the position back; the events after it that were handled without a
    receipt get one at the end of the pass, so the next pass does not handle them again."""
    first, second = PartnerFactory(), PartnerFactory()
    db.session.commit()
    with time_machine.travel(NOW, tick=False):
        sale_ready_to_dispatch(db, program, first, "D-G-1")
        outbox.dispatch(send=False)
        before = positions(db)["live"]
        sell(program, second, "D-G-2")
        db.session.commit()
        ids = sorted(db.session.scalars(sa.select(OutboxEvent.id).where(OutboxEvent.id > before)))
        # The first of them disappears: as if its transaction had not committed yet.
        db.session.execute(sa.delete(OutboxEvent).where(OutboxEvent.id == ids[0]))
        db.session.commit()
        emitted.clear()
        report = outbox.dispatch(send=False)
        assert report.handled["live"] == len(ids) - 1
        assert positions(db)["live"] == before  # the gap holds it
        receipts = db.session.scalars(
            sa.select(OutboxReceipt.event_id).where(OutboxReceipt.consumer == "live")
        ).all()
        assert sorted(receipts) == ids[1:]
        assert emitted
        emitted.clear()
        again = outbox.dispatch(send=False)
        assert again.handled["live"] == 0
        assert emitted == []
    # Once the gap is older than the horizon, the position passes it and the receipts go.
    with time_machine.travel(NOW + outbox.GAP_HORIZON + timedelta(seconds=1), tick=False):
        outbox.dispatch(send=False)
    assert positions(db)["live"] == newest_event(db)
    assert not db.session.scalars(sa.select(OutboxReceipt).where(OutboxReceipt.consumer == "live")).all()


def test_nothing_due_for_the_webhooks_costs_one_read_and_no_write_turn(db, write_turns):
    seen, sent = statements_during(db.engine, webhooks.send_due)
    assert sent == 0
    assert write_turns == []
    assert [sql.split()[0] for sql in seen] == ["SELECT"]


def test_a_process_new_to_partners_learns_their_earlier_sales_in_one_query(db, program, emitted, monkeypatch):
    """A process that has not seen these partners yet (a restart, the other worker): their
    later sales are passed over after one query for the whole batch, without a call, a
    savepoint or a receipt each; a partner whose first and second sale are both in the batch
    is still congratulated once, for the first."""
    from portal import lookups
    from portal.models import AutomaticKind, Thread
    from portal.services import lifecycle

    regulars, newcomer = [PartnerFactory() for _ in range(3)], PartnerFactory()
    db.session.commit()
    with time_machine.travel(NOW, tick=False):
        for index, partner in enumerate(regulars):
            sell(program, partner, f"D-L-{index}-1")
        db.session.commit()
        start_at_the_first_event(db)
        outbox.dispatch(send=False)  # each regular's first sale: congratulated
        for index, partner in enumerate(regulars):
            sell(program, partner, f"D-L-{index}-2")
        sell(program, newcomer, "D-L-new-1")
        sell(program, newcomer, "D-L-new-2")
        db.session.commit()
        lookups.lookups().forget("has_counted_sale")  # as in a process that has not seen them
        called: list[int] = []
        handle = lifecycle.handle_event

        def counted(event):
            called.append(event.data["conversion_id"])
            handle(event)

        monkeypatch.setattr(lifecycle, "handle_event", counted)
        seen, result = statements_during(db.engine, lambda: outbox.run_consumer("messages"))
        db.session.commit()
    newcomer_sales = sorted(
        db.session.scalars(sa.select(OutboxEvent.data).where(OutboxEvent.partner_id == newcomer.id)).all(),
        key=str,
    )
    first_sale = min(data["conversion_id"] for data in newcomer_sales if "conversion_id" in data)
    assert result == (5, 0)  # five sales (the message.sent it writes waits for the next pass)
    # Looked at: the newcomer's sales only (the first congratulated, the second found not first).
    assert first_sale in called and len(called) == 2
    earliest = [sql for sql in seen if sql.startswith("SELECT conversions.partner_id, min(conversions.id)")]
    assert len(earliest) == 1
    firsts = db.session.scalars(
        sa.select(Thread.partner_id).where(Thread.automatic_kind == AutomaticKind.FIRST_CONVERSION)
    ).all()
    assert sorted(firsts) == sorted(p.id for p in [*regulars, newcomer])


def test_a_busy_pass_makes_the_background_dispatcher_wait_longer_before_the_next():
    quiet = outbox.DispatchReport(handled={"messages": 3, "live": 9, "webhooks": 0})
    busy = outbox.DispatchReport(handled={"messages": 2, "live": outbox.BATCH, "webhooks": 0})
    assert outbox.next_delay(0.25, quiet) == 0.25
    assert outbox.next_delay(0.25, busy) == 0.25 * outbox.BUSY_FACTOR
    assert outbox.next_delay(0.25, outbox.DispatchReport()) == 0.25


def test_the_background_dispatcher_waits_as_next_delay_says(app, monkeypatch):
    """Each pass of the dispatcher's thread sleeps the delay it is given, dispatches, and
    gives the next delay: four times the base after a busy pass, the base after a quiet one
    or a failed one."""
    reports = [
        outbox.DispatchReport(handled={"live": outbox.BATCH}),
        outbox.DispatchReport(handled={"live": 1}),
    ]
    slept: list[float] = []
    monkeypatch.setitem(app.config, "OUTBOX_DISPATCH_DELAY_MS", 100)
    monkeypatch.setattr(outbox, "dispatch", lambda: reports.pop(0))
    monkeypatch.setattr(outbox.time, "sleep", slept.append)
    dispatcher = outbox.Dispatcher(app)
    delay = dispatcher._pass(0.1)
    assert delay == 0.1 * outbox.BUSY_FACTOR
    assert dispatcher._pass(delay) == 0.1
    assert slept == [0.1, 0.1 * outbox.BUSY_FACTOR]
    monkeypatch.setattr(outbox, "dispatch", lambda: 1 / 0)
    monkeypatch.setattr(app.logger, "exception", lambda *args: None)
    assert dispatcher._pass(0.4) == 0.1


def test_a_sale_approved_after_review_is_congratulated_though_a_later_one_was_refunded(
    db, program, emitted, monkeypatch
):
    """A partner's first sale is held for review; a later one is refunded in full; then the
    first is approved. The refunded sale's batch must not teach the process that the partner
    sold before (its own sale does not count): the approval, in a later batch, is looked at
    and congratulated as the partner's first sale (found by the review of this change)."""
    from portal import lookups
    from portal.models import AutomaticKind, Conversion, ConversionStatus, Thread
    from tests.factories import UserFactory

    partner = PartnerFactory()
    operator = UserFactory(role="admin")
    db.session.commit()
    with time_machine.travel(NOW, tick=False):
        first = sale_ready_to_dispatch(db, program, partner, "D-R-A")
        # Held for review on arrival (as a fraud rule holds it): its event says so.
        db.session.execute(
            sa.update(Conversion).where(Conversion.id == first.id).values(status=ConversionStatus.REVIEW)
        )
        db.session.execute(
            sa.update(OutboxEvent)
            .where(OutboxEvent.type == "conversion.created")
            .values(type="conversion.flagged")
        )
        db.session.commit()
        db.session.expire_all()
        later = sell(program, partner, "D-R-B")
        db.session.commit()
        tracking.refund_conversion(later, None, "refund")
        db.session.commit()
        tracking.approve_conversion(program, db.session.get(Conversion, first.id), operator)
        db.session.commit()
        lookups.lookups().forget("has_counted_sale")
        monkeypatch.setattr(outbox, "BATCH", 1)  # the refunded sale and the approval apart
        for _ in range(3):
            outbox.dispatch(send=False)
    kinds = db.session.scalars(sa.select(Thread.automatic_kind).where(Thread.partner_id == partner.id)).all()
    assert AutomaticKind.FIRST_CONVERSION in kinds


def test_a_delivery_sent_by_another_sender_after_the_look_is_not_claimed_again(
    db, program, emitted, monkeypatch
):
    """The sender looks for due deliveries before it takes the write lock; a delivery another
    sender attempted meanwhile (its next attempt now an hour away) is not claimed, so it is
    not sent again before its time (found by the review of this change)."""
    from portal.models import WebhookDelivery

    partner = PartnerFactory()
    db.session.commit()
    with time_machine.travel(NOW, tick=False):
        webhooks.create_endpoint("https://hooks.example.com/in", ["conversion.created"], None)
        db.session.commit()
        sale_ready_to_dispatch(db, program, partner, "D-W-1")
        outbox.dispatch(send=False)
        real = webhooks._due_ids

        def raced(now, limit):
            ids = real(now, limit)
            db.session.execute(
                sa.update(WebhookDelivery)
                .where(WebhookDelivery.id.in_(ids))
                .values(attempts=1, next_attempt_at=now + timedelta(hours=1))
            )
            return ids

        monkeypatch.setattr(webhooks, "_due_ids", raced)
        assert webhooks._claim(50) == []
        monkeypatch.setattr(webhooks, "_due_ids", real)
    with time_machine.travel(NOW + timedelta(hours=1, seconds=1), tick=False):
        assert len(webhooks._claim(50)) == 1


def test_a_dispatcher_whose_lease_ran_out_leaves_the_position_and_the_receipts_to_the_new_holder(
    db, program, emitted
):
    """A pass that outlived its lease (another dispatcher took the consumer meanwhile) does
    not move the position nor delete receipts: those are the new holder's, and deleting one
    below a position it does not hold would let an event be handled twice."""
    partner = PartnerFactory()
    db.session.commit()
    with time_machine.travel(NOW, tick=False):
        sale_ready_to_dispatch(db, program, partner, "D-E-1")
        held = outbox._take_leases(["messages"], "host:1:1")
        position = held["messages"]
        first_event = position + 1
        # The lease ran out; another dispatcher took the consumer and handled the event.
        db.session.execute(
            sa.update(OutboxConsumer)
            .where(OutboxConsumer.name == "messages")
            .values(lease_owner="host:2:2", lease_until=NOW + outbox.LEASE)
        )
        db.session.add(OutboxReceipt(consumer="messages", event_id=first_event))
        db.session.commit()
        # What this pass saw: the event, handled (the receipt above), so the position would move.
        seen = outbox._Pass(position, events=outbox._events_after(position, 10), handled={first_event})
        outbox._finish({"messages": seen}, "host:1:1")
    assert positions(db)["messages"] == position
    receipts = db.session.scalars(
        sa.select(OutboxReceipt.event_id).where(OutboxReceipt.consumer == "messages")
    )
    assert list(receipts) == [first_event]
    assert db.session.get(OutboxConsumer, "messages").lease_owner == "host:2:2"


# --- a pass that stops at its limit -----------------------------------------------------------


def test_a_pass_stopped_at_its_limit_says_so_and_run_triggers_hands_on_the_rest(
    db, program, emitted, monkeypatch
):
    """More events than a pass reads: the pass names the consumers it cut short, and one
    ``run-triggers`` goes on until every consumer has them all (not PASS_LIMIT a job)."""
    from portal.jobs import run_triggers

    partners = [PartnerFactory() for _ in range(4)]
    sale_ready_to_dispatch(db, program, partners[0], "limit-0")
    for n, partner in enumerate(partners[1:], start=1):
        sell(program, partner, f"limit-{n}")
    db.session.commit()
    newest = newest_event(db)
    monkeypatch.setattr(outbox, "PASS_LIMIT", 3)

    report = outbox.dispatch(send=False)
    assert "live" in report.more
    assert positions(db)["live"] < newest

    triggers = run_triggers()
    # Up to the newest event, the messages' own (message.sent, written meanwhile) included.
    assert newest_event(db) > newest
    assert positions(db) == dict.fromkeys(outbox.CONSUMERS, newest_event(db))
    assert triggers.events >= 1  # the first sale's message among what it handed on
    assert not outbox.dispatch(send=False).more


def test_the_background_dispatcher_goes_on_by_itself_after_a_pass_stopped_at_its_limit(app, monkeypatch):
    """No commit may come after a burst to kick it again: a pass cut short wakes the thread
    itself (after the busy delay), so the rest does not wait for cron."""
    reports = [
        outbox.DispatchReport(handled={"live": outbox.PASS_LIMIT}, more=["live"]),
        outbox.DispatchReport(handled={"live": outbox.BATCH}),
    ]
    monkeypatch.setitem(app.config, "OUTBOX_DISPATCH_DELAY_MS", 100)
    monkeypatch.setattr(outbox, "dispatch", lambda: reports.pop(0))
    monkeypatch.setattr(outbox.time, "sleep", lambda seconds: None)
    dispatcher = outbox.Dispatcher(app)
    assert dispatcher._pass(0.1) == 0.1 * outbox.BUSY_FACTOR
    assert dispatcher._wake.is_set()
    assert dispatcher._pass(0.4) == 0.1 * outbox.BUSY_FACTOR
    assert not dispatcher._wake.is_set()


# --- the messages of a batch, sent together ----------------------------------------------------


def first_sale_messages(db) -> dict[int, tuple]:
    """{partner id: (subject, body, message id, thread id)} of the first-sale messages."""
    from portal.models import AutomaticKind, Message, Thread

    rows = db.session.execute(
        sa.select(Thread.partner_id, Thread.subject, Message.body, Message.id, Thread.id)
        .join(Message, Message.thread_id == Thread.id)
        .where(Thread.automatic_kind == AutomaticKind.FIRST_CONVERSION)
    ).all()
    messages = {}
    for partner_id, *rest in rows:
        assert partner_id not in messages, "one first-sale message a partner"
        messages[partner_id] = tuple(rest)
    return messages


def inserts_into(seen: list[str], table: str) -> int:
    return sum(1 for sql in seen if sql.startswith(f"INSERT INTO {table} "))


@pytest.mark.parametrize("partners", [2, 7])
def test_a_batchs_messages_are_written_by_a_few_statements_each_to_its_own_partner(
    db, program, emitted, partners
):
    """Every partner's first sale calls for a message; the batch's messages are written
    together: one INSERT each into the log, the threads, the messages and the events, and
    one UPDATE of the log, whatever their number. Each row still belongs to its own
    partner: the subject names them, the body their order, the log and the ``message.sent``
    event point at their message, and each partner's page is told of their own thread."""
    from portal.models import AutomaticMessageLog

    with time_machine.travel(NOW, tick=False):
        sellers = first_sales_ready(db, program, partners, "D-T")
        emitted.clear()
        seen, _result = statements_during(db.engine, lambda: outbox.run_consumer("messages"))
        db.session.commit()

    for table in ("automatic_message_log", "threads", "messages", "outbox_events"):
        assert inserts_into(seen, table) == 1, (table, [sql for sql in seen if table in sql])
    assert sum(1 for sql in seen if sql.startswith("UPDATE automatic_message_log ")) == 1
    messages = first_sale_messages(db)
    assert sorted(messages) == sorted(partner.id for partner in sellers)
    logs = {
        log.partner_id: log.message_id
        for log in db.session.scalars(
            sa.select(AutomaticMessageLog).where(AutomaticMessageLog.dedupe_key == "first")
        )
    }
    sent = {
        event.partner_id: event.data
        for event in db.session.scalars(sa.select(OutboxEvent).where(OutboxEvent.type == "message.sent"))
    }
    sales = dict(db.session.execute(sa.select(Conversion.partner_id, Conversion.id)).all())
    for index, partner in enumerate(sellers):
        subject, body, message_id, thread_id = messages[partner.id]
        assert f"Seller D-T {index}!" in subject and f"/partner/conversions/{sales[partner.id]})" in body
        assert logs[partner.id] == message_id
        assert (sent[partner.id]["message_id"], sent[partner.id]["thread_id"]) == (message_id, thread_id)
    assert sorted(to for name, to in emitted if name == "message" and to != "operators") == sorted(
        f"partner:{partner.id}" for partner in sellers
    )


def test_a_batch_that_fails_together_is_handled_one_event_at_a_time(db, program, emitted, monkeypatch):
    """A batch whose messages cannot all be written (here one partner's ``message.sent``
    event, after the batch's threads and messages were inserted) is rolled back as a whole
    and handled again one event at a time: the others' messages are sent once, the failing
    event waits for the next dispatch, and no page is told of a message rolled back."""
    from portal.models import Thread
    from portal.services import events

    with time_machine.travel(NOW, tick=False):
        sellers = first_sales_ready(db, program, 3, "D-F")
        broken = sellers[1].id
        real = events.record_many

        def refuses_one_partner(rows):
            if any(partner_id == broken for _type, _data, partner_id in rows):
                raise RuntimeError("the event cannot be written")
            real(rows)

        monkeypatch.setattr(events, "record_many", refuses_one_partner)
        emitted.clear()
        report = outbox.dispatch(send=False)
        assert (report.handled["messages"], report.failed["messages"]) == (1, 1)
        told = [to for name, to in emitted if name == "message" and to != "operators"]
        assert told == [f"partner:{sellers[0].id}"]
        monkeypatch.setattr(events, "record_many", real)
        report = outbox.dispatch(send=False)
    assert report.failed["messages"] == 0
    assert sorted(first_sale_messages(db)) == sorted(partner.id for partner in sellers)
    assert len(set(db.session.scalars(sa.select(Thread.id)))) == len(sellers)
    told = [to for name, to in emitted if name == "message" and to != "operators"]
    assert sorted(told) == sorted(f"partner:{partner.id}" for partner in sellers)


def test_messages_handled_again_are_not_sent_again(db, program, emitted):
    """A batch handled twice (its receipts and the position lost, as after a crash between
    the messages' commit and the position's) sends nothing the second time: the log's keys
    hold, for the whole batch in one statement."""
    with time_machine.travel(NOW, tick=False):
        sellers = first_sales_ready(db, program, 4, "D-A")
        before = positions(db)["messages"]
        outbox.run_consumer("messages")
        db.session.commit()
        first = first_sale_messages(db)
        db.session.execute(
            sa.update(OutboxConsumer).where(OutboxConsumer.name == "messages").values(position=before)
        )
        db.session.execute(sa.delete(OutboxReceipt))
        db.session.commit()
        outbox.run_consumer("messages")
        db.session.commit()
    assert first_sale_messages(db) == first
    assert len(first) == len(sellers)


# --- the dispatcher as a process of its own (OUTBOX_DISPATCH_MODE=process) ---------------------


class Looks:
    """``follow``'s stop event: lets it look ``times`` times, then stops it."""

    def __init__(self, times: int):
        self.left = times
        self.delays: list[float] = []

    def wait(self, delay: float) -> bool:
        self.delays.append(delay)
        self.left -= 1
        return self.left < 0


def test_the_dispatcher_process_dispatches_when_events_came_and_sends_what_is_due_by_time(app, monkeypatch):
    """Each look reads the newest event id: a pass only when it changed, or when the last
    pass stopped at its limit or found a consumer held elsewhere (then again at once, or
    after the short retry); every pass sends what it made due, and looks without a pass
    send what came due by time every SEND_EVERY seconds."""
    from portal.services import delivery, webhooks

    newest = iter([0, 0, 5, 5, 5, 9, 9, 9, 9, 9, 9, 9])
    reports = iter(
        [
            outbox.DispatchReport(),  # the first look: nothing seen yet
            outbox.DispatchReport(handled={"live": 3}),  # 5: new events
            outbox.DispatchReport(handled={"live": outbox.PASS_LIMIT}, more=["live"]),  # 9: cut short
            outbox.DispatchReport(skipped=["messages"]),  # 9 again: the rest, a consumer held
            outbox.DispatchReport(),  # 9 again: retried after the short pause
        ]
    )
    passes: list[bool] = []
    sent: list[str] = []
    now = [0.0]

    def dispatch(send=True):
        passes.append(send)
        return next(reports)

    def clock():
        now[0] += 1.0  # each look a second later
        return now[0]

    monkeypatch.setattr(outbox, "newest_event_id", lambda: next(newest))
    monkeypatch.setattr(outbox, "dispatch", dispatch)
    monkeypatch.setattr(webhooks, "send_due", lambda: sent.append("webhooks"))
    monkeypatch.setattr(delivery, "send_ready", lambda: sent.append("mail"))
    monkeypatch.setitem(app.config, "OUTBOX_DISPATCH_DELAY_MS", 100)
    monkeypatch.setattr(outbox, "SEND_EVERY", 3.0)
    looks = Looks(12)
    outbox.follow(app, looks, clock=clock)

    assert passes == [True] * 5  # looks 1, 3, 6, 7 and 8: the others found nothing new
    base = 0.1
    busy = base * outbox.BUSY_FACTOR
    # Before each look: the first, then after looks 1-5, busy after the pass cut short
    # (look 6), the short retry after the one that found a consumer held (look 7).
    assert looks.delays == [base] * 6 + [busy, outbox.RETRY_SKIPPED_SECONDS] + [base] * 5
    # The last pass at look 8 (second 9): looks 9 and 10 send nothing, look 11 (second 12)
    # sends what came due by time, look 12 nothing again.
    assert sent == ["webhooks", "mail"]


def test_the_dispatcher_process_outlives_a_failing_look(app, monkeypatch):
    failures = iter([RuntimeError("the database is restarting"), 7, 7])

    def newest():
        value = next(failures)
        if isinstance(value, Exception):
            raise value
        return value

    passes: list[bool] = []
    monkeypatch.setattr(outbox, "newest_event_id", newest)
    monkeypatch.setattr(outbox, "dispatch", lambda send=True: passes.append(send) or outbox.DispatchReport())
    outbox.follow(app, Looks(3))
    assert len(passes) == 1  # the look after the failure found 7, the next nothing new


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"OUTBOX_DISPATCH_MODE": "process", "REDIS_URL": None}, "needs REDIS_URL"),
        ({"OUTBOX_DISPATCH_MODE": "sideways"}, "must be one of"),
    ],
)
def test_a_dispatch_mode_that_cannot_work_stops_the_start(database_url, settings, says):
    from config import TestingConfig
    from portal import create_app

    with pytest.raises(RuntimeError, match=says):
        create_app(TestingConfig, SQLALCHEMY_DATABASE_URI=database_url, **settings)


def test_in_process_mode_a_request_wakes_no_dispatcher_of_its_own(app, monkeypatch):
    """The web workers leave the events to the dispatcher process: no thread, no pass."""
    monkeypatch.setitem(app.config, "OUTBOX_DISPATCH_MODE", "process")
    monkeypatch.setattr(outbox, "dispatch", lambda *a, **k: pytest.fail("a worker dispatched"))
    with app.app_context():
        from portal.extensions import db

        db.session.info[outbox._READY_KEY] = True
        outbox.kick_if_ready()
        assert app.extensions["outbox_dispatcher"]._thread is None


def test_the_dispatcher_command_refuses_to_run_without_redis(app):
    app.config["REDIS_URL"] = None
    result = app.test_cli_runner().invoke(args=["portal", "dispatcher"])
    assert result.exit_code == 1
    assert "needs REDIS_URL" in result.output

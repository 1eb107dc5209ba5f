"""The sale's events written by the database's triggers (migration 0017), on SQLite and PostgreSQL:
each in the sale's own transaction, with the keys its documented example has."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import time_machine

from portal.models import OutboxEvent
from portal.services import events, tracking
from portal.services.tracking import ConversionInput
from tests.factories import PartnerFactory

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def written(db) -> list[tuple[str, dict]]:
    return [(e.type, e.data) for e in db.session.scalars(sa.select(OutboxEvent).order_by(OutboxEvent.id))]


def sale(program, partner, transaction_id, **kwargs):
    data = ConversionInput(transaction_id, 10_000, program.currency, ref=partner.ref_code, **kwargs)
    return tracking.record_conversion(program, data, {"transaction_id": transaction_id})[0]


def test_a_sale_writes_its_conversion_and_commission_events(db, program):
    partner = PartnerFactory()
    with time_machine.travel(NOW, tick=False):
        conversion = sale(program, partner, "T-1")
    found = written(db)
    assert found[0][0] == "conversion.created"
    created = found[0][1]
    assert (created["conversion_id"], created["transaction_id"], created["partner_id"]) == (
        conversion.id,
        "T-1",
        partner.id,
    )
    lines = [d for t, d in found if t == "commission.created"]
    assert sorted(d["commission_id"] for d in lines) == sorted(c.id for c in conversion.commissions)
    assert sum(d["amount_minor"] for d in lines) == sum(c.amount_minor for c in conversion.commissions)
    for event_type, data in found:
        assert set(data) == set(events.TYPES[event_type][1]), event_type


def test_a_sale_rejected_on_arrival_writes_conversion_rejected_and_no_commission(db, program):
    partner = PartnerFactory()
    with time_machine.travel(NOW, tick=False):
        sale(program, partner, "T-old", occurred_at=NOW - timedelta(days=program.cookie_window_days + 5))
    [(event_type, data)] = written(db)
    assert event_type == "conversion.rejected"
    assert (data["status"], data["reason"]) == ("rejected", "out_of_window")


def test_a_full_refund_writes_the_refund_and_the_reversal(db, program):
    partner = PartnerFactory()
    with time_machine.travel(NOW, tick=False):
        conversion = sale(program, partner, "T-back")
        before = len(written(db))
        tracking.refund_conversion(conversion, None, "returned")
    later = [t for t, _ in written(db)[before:]]
    assert "conversion.refunded" in later
    assert "commission.reversed" in later
    for event_type, data in written(db):
        assert set(data) == set(events.TYPES[event_type][1]), event_type


def test_the_events_roll_back_with_the_sale(db, program):
    partner = PartnerFactory()
    db.session.commit()
    with time_machine.travel(NOW, tick=False):
        sale(program, partner, "T-gone")
    db.session.rollback()
    assert written(db) == []

"""One status per line: ``payouts.line_state`` names every state, and the conversion's
status (pages, CSV, API) is read from it."""

import csv
import io
from datetime import UTC, date, datetime, timedelta

import pytest

from portal.extensions import db as _db
from portal.models import PartnerStatus, PayoutLine
from portal.services import payouts
from portal.services.commissions import commission_summary
from portal.services.payouts import LineState, line_state, lines_state
from tests.factories import CommissionFactory, PartnerFactory, PayoutItemFactory, earn

AT = datetime(2026, 9, 1, tzinfo=UTC)


def _batch(db, partner, line, item_status="pending", batch_status="review", **item):
    payout_item = PayoutItemFactory(
        batch__kind="withdrawal", batch__status=batch_status, batch__period_end=date(2026, 10, 15),
        batch__cutoff_at=AT + timedelta(days=40), partner=partner, amount_minor=line.amount_minor,
        status=item_status, **item,
    )  # fmt: skip
    if item_status in ("pending", "paid"):
        db.session.add(PayoutLine(commission_id=line.id, payout_item_id=payout_item.id))
        db.session.flush()
    db.session.expire(line)
    return payout_item


def _correction(line, kind, amount):
    correction = CommissionFactory(
        conversion=line.conversion, partner=line.partner, kind=kind, amount_minor=amount, at=AT,
        reverses=line, reason_code="refund",
    )  # fmt: skip
    _db.session.expire(line.conversion)
    return correction


def test_pending_line(db):
    line = earn(PartnerFactory(), 1200, confirmed=False, at=AT)
    assert line_state(line) == LineState.PENDING
    # A hold never touches a line that is not confirmed yet.
    assert line_state(line, "suspended") == LineState.PENDING


def test_confirmed_line_and_held_line(db):
    line = earn(PartnerFactory(), 1200, at=AT)
    assert line_state(line) == LineState.CONFIRMED
    assert line_state(line, "suspended") == LineState.HELD
    assert line_state(line, "no_details") == LineState.HELD


def test_line_in_a_payout_and_paid(db):
    partner = PartnerFactory()
    waiting = earn(partner, 1200, at=AT)
    _batch(db, partner, waiting)
    assert line_state(waiting) == LineState.IN_PAYOUT
    assert line_state(waiting, "suspended") == LineState.IN_PAYOUT  # already out of the balance

    other = PartnerFactory()
    paid = earn(other, 900, at=AT)
    _batch(db, other, paid, item_status="paid", reference="BATCH-5-REF", paid_on=date(2026, 10, 16))
    assert line_state(paid) == LineState.PAID


def test_a_failed_payment_puts_the_line_back_to_confirmed(db):
    partner = PartnerFactory()
    line = earn(partner, 1200, at=AT)
    _batch(db, partner, line, item_status="failed", failure_reason="bounced")
    assert line_state(line) == LineState.CONFIRMED


def test_corrections_are_reversed_or_clawed_back(db):
    partner = PartnerFactory()
    line = earn(partner, 1200, at=AT)
    reversal = _correction(line, "reversal", -1200)
    clawback = _correction(earn(partner, 500, at=AT), "clawback", -500)
    assert line_state(reversal) == LineState.REVERSED
    assert line_state(clawback) == LineState.CLAWED_BACK


def test_conversion_state_is_its_least_advanced_earning_line_or_reversed(db):
    partner = PartnerFactory()
    line = earn(partner, 1200, at=AT)
    assert lines_state([line]) == LineState.CONFIRMED
    _batch(db, partner, line, item_status="paid", reference="BATCH-5-REF", paid_on=date(2026, 10, 16))
    assert commission_summary(line.conversion)["status"] == "paid"

    refunded = earn(partner, 800, at=AT)
    _correction(refunded, "reversal", -800)
    assert commission_summary(refunded.conversion)["status"] == "reversed"

    clawed = earn(partner, 600, at=AT)
    _correction(clawed, "clawback", -600)
    assert commission_summary(clawed.conversion)["status"] == "clawed_back"

    partly = earn(partner, 1000, at=AT)
    _correction(partly, "reversal", -400)
    summary = commission_summary(partly.conversion)
    assert (summary["status"], summary["amount_minor"]) == ("confirmed", 600)
    assert commission_summary(partly.conversion, "suspended")["status"] == "held"


@pytest.mark.parametrize(
    ("status", "hold"), [(PartnerStatus.SUSPENDED, "suspended"), (PartnerStatus.APPROVED, None)]
)
def test_hold_of_a_partner(db, status, hold):
    partner = PartnerFactory(status=status)
    assert payouts.hold_of(partner) == hold


def test_no_details_hold_lasts_while_the_batch_is_open_and_details_are_missing(db):
    partner = PartnerFactory()
    line = earn(partner, 1200, at=AT)
    item = _batch(db, partner, line, item_status="held", hold_reason="no_details")
    assert payouts.hold_of(partner) == "no_details"
    assert line_state(line, payouts.hold_of(partner)) == LineState.HELD
    item.batch.status = "closed"
    db.session.flush()
    assert payouts.hold_of(partner) is None


def test_the_csv_uses_the_same_words(db):
    partner = PartnerFactory()
    paid = earn(partner, 1200, at=AT)
    _batch(db, partner, paid, item_status="paid", reference="BATCH-5-REF", paid_on=date(2026, 10, 16))
    earn(partner, 300, confirmed=False, at=AT)
    rows = list(csv.DictReader(io.StringIO(payouts.ledger_csv(partner.id).removeprefix("\ufeff"))))
    assert sorted((row["Status"], row["Reference"]) for row in rows) == [
        ("paid", "BATCH-5-REF"),
        ("pending", ""),
    ]

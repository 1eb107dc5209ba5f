"""Suspension freezes money out: refusals, held items, release on reinstatement."""

from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
import time_machine

from portal.errors import DomainError
from portal.models import AuditEvent, Link, PayoutAccount, PayoutBatch, PayoutLine, Role
from portal.services import accounts, commissions, links, payouts
from portal.services.payouts import PayoutDetails, save_payout_account, settle
from tests.factories import PartnerFactory, ProgramFactory, UserFactory, earn

pytestmark = pytest.mark.postgres

AS_OF = date(2026, 11, 20)  # payout day 15 → settles the 15 Nov 2026 period
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


@pytest.fixture
def program(db):
    program = ProgramFactory(
        currency="USD", timezone="UTC", payout_schedule="monthly", payout_day=15, minimum_payout_minor=5000,
        allow_withdrawals=True,
    )  # fmt: skip
    db.session.flush()
    return program


@pytest.fixture
def manager(db):
    return UserFactory(role=Role.MANAGER)


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=False):
        yield


def paid_partner(db, amount=6000):
    partner = PartnerFactory()
    save_payout_account(
        partner, PayoutDetails(method="paypal", paypal_email=f"p{partner.id}@example.org"), partner.user
    )
    line = earn(partner, amount, at=datetime(2026, 11, 1, tzinfo=UTC))
    return partner, line


def lines_in(db, item) -> int:
    return db.session.scalar(
        sa.select(sa.func.count()).select_from(PayoutLine).where(PayoutLine.payout_item_id == item.id)
    )


def events(db, action):
    return list(db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == action)))


def test_a_suspended_partner_cannot_withdraw_change_details_or_make_links(db, program, manager, clock):
    partner, _line = paid_partner(db)
    accounts.suspend_partner(partner, manager, "chargebacks")
    before = db.session.scalar(
        sa.select(PayoutAccount.paypal_email).where(PayoutAccount.partner_id == partner.id)
    )
    with pytest.raises(DomainError, match="suspended"):
        payouts.request_withdrawal(program, partner, NOW)
    with pytest.raises(DomainError, match="suspended"):
        save_payout_account(
            partner, PayoutDetails(method="paypal", paypal_email="thief@example.org"), partner.user
        )
    with pytest.raises(DomainError, match="suspended"):
        links.create_link(partner, program, label="x", channel="seo")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(PayoutBatch)) == 0
    assert (
        db.session.scalar(sa.select(PayoutAccount.paypal_email).where(PayoutAccount.partner_id == partner.id))
        == before
    )
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Link)) == 0


def test_a_batch_holds_a_suspended_partners_item_without_its_lines(db, program, manager, clock):
    active, _active_line = paid_partner(db)
    suspended, _suspended_line = paid_partner(db, 7000)
    accounts.suspend_partner(suspended, manager, "chargebacks")
    batch, created = settle(program, AS_OF, NOW, manager)
    assert created
    items = {item.partner_id: item for item in batch.items}
    held = items[suspended.id]
    assert (held.status, held.hold_reason, held.amount_minor) == ("held", "suspended", 7000)
    assert lines_in(db, held) == 0
    assert (items[active.id].status, items[active.id].hold_reason) == ("pending", None)
    assert lines_in(db, items[active.id]) == 1
    # The held money stays in the balance and is not counted as in a payout.
    figures = payouts.earnings_of(suspended.id)
    assert (figures.confirmed, figures.in_payout) == (7000, 0)
    (event,) = events(db, "payout.item_held")
    assert (event.subject_id, event.data["reason"]) == (held.id, "suspended")


def test_reinstatement_joins_the_lines_still_unpaid_to_an_item_in_review(db, program, manager, clock):
    partner, line = paid_partner(db, 7000)
    accounts.suspend_partner(partner, manager, "checking")
    batch, _ = settle(program, AS_OF, NOW, manager)
    (item,) = batch.items
    # While suspended, a second line arrived (a sale that earned nothing): it joins the item too.
    earn(partner, 0, at=datetime(2026, 11, 2, tzinfo=UTC))
    accounts.reinstate_partner(partner, manager)
    db.session.refresh(item)
    assert (item.status, item.hold_reason, item.method) == ("pending", None, "paypal")
    assert item.amount_minor == 7000
    assert lines_in(db, item) == 2
    assert payouts.line_state(line) == "in_payout"
    assert payouts.batch_summary(batch).to_pay_minor == 7000
    (event,) = events(db, "payout.item_released")
    assert (event.data["outcome"], event.data["lines"], event.data["amount_minor"]) == ("in_batch", 2, 7000)


def test_reinstatement_below_the_minimum_carries_the_balance_over(db, program, manager, clock):
    partner, line = paid_partner(db, 7000)
    accounts.suspend_partner(partner, manager, "checking")
    batch, _ = settle(program, AS_OF, NOW, manager)
    (item,) = batch.items
    # Before the batch's cut-off, part of the sale was refunded: a confirmed reversal of 30.00.
    with time_machine.travel(datetime(2026, 11, 2, tzinfo=UTC), tick=False):
        commissions.correction(line, 3000, "refund", "returned", {"rule": "refund"})
        db.session.flush()
    accounts.reinstate_partner(partner, manager)
    db.session.refresh(item)
    assert (item.status, item.hold_reason) == ("held", "suspended")
    assert lines_in(db, item) == 0
    assert payouts.confirmed_balance(partner.id) == 4000
    assert events(db, "payout.item_released")[0].data["outcome"] == "next_payout"


def test_reinstatement_leaves_an_approved_batch_alone_and_the_next_batch_pays(db, program, manager, clock):
    partner, _line = paid_partner(db, 7000)
    accounts.suspend_partner(partner, manager, "checking")
    _other, _ = paid_partner(db)
    batch, _ = settle(program, AS_OF, NOW, manager)
    payouts.approve_batch(batch, manager)
    approved_total = payouts.batch_total(batch)
    accounts.reinstate_partner(partner, manager)
    held = next(item for item in batch.items if item.partner_id == partner.id)
    db.session.refresh(held)
    assert held.status == "held" and lines_in(db, held) == 0
    assert payouts.batch_total(batch) == approved_total
    assert events(db, "payout.item_released")[0].data["outcome"] == "next_payout"
    # The next scheduled batch pays the balance, each line once.
    with time_machine.travel(NOW + timedelta(days=30), tick=False):
        later, created = settle(program, date(2026, 12, 20), NOW + timedelta(days=30), manager)
    assert created
    (item,) = [i for i in later.items if i.partner_id == partner.id]
    assert (item.status, item.amount_minor, lines_in(db, item)) == ("pending", 7000, 1)


def test_reinstatement_without_payout_details_keeps_the_item_held_for_that(db, program, manager, clock):
    partner = PartnerFactory()
    earn(partner, 7000, at=datetime(2026, 11, 1, tzinfo=UTC))
    accounts.suspend_partner(partner, manager, "checking")
    batch, _ = settle(program, AS_OF, NOW, manager)
    (item,) = batch.items
    assert item.hold_reason == "suspended"  # suspension first
    accounts.reinstate_partner(partner, manager)
    db.session.refresh(item)
    assert (item.status, item.hold_reason) == ("held", "no_details")


def test_suspension_holds_an_item_waiting_in_a_batch_in_review(db, program, manager, clock):
    partner, line = paid_partner(db, 7000)
    batch, _ = settle(program, AS_OF, NOW, manager)
    (item,) = batch.items
    assert lines_in(db, item) == 1
    accounts.suspend_partner(partner, manager, "chargebacks")
    db.session.refresh(item)
    assert (item.status, item.hold_reason, lines_in(db, item)) == ("held", "suspended", 0)
    assert payouts.line_state(line, payouts.hold_of(partner)) == "held"
    assert events(db, "payout.item_held")[0].data["lines"] == 1
    accounts.reinstate_partner(partner, manager)
    db.session.refresh(item)
    assert (item.status, item.amount_minor, lines_in(db, item)) == ("pending", 7000, 1)

"""Settlement and payment: carry-over, clawbacks, failed payments, idempotency, exports."""

import csv
import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
import time_machine

from portal.errors import DomainError
from portal.models import AuditEvent, Commission, PayoutBatch, PayoutItem, PayoutLine, Role
from portal.models.types import utcnow
from portal.services import payouts, tracking
from portal.services.payouts import PayoutDetails, iban_is_valid, save_payout_account, settle
from tests.factories import PartnerFactory, ProgramFactory, UserFactory, earn

# Settlement is set-based SQL with a PostgreSQL-only form (one statement): every test runs on both.
pytestmark = pytest.mark.postgres

AS_OF = date(2026, 11, 20)  # payout day 15 → settles the 15 Nov 2026 period


@pytest.fixture
def program(db):
    program = ProgramFactory(
        currency="USD", timezone="UTC", payout_schedule="monthly", payout_day=15, minimum_payout_minor=5000
    )
    db.session.flush()
    return program


@pytest.fixture
def manager(db):
    return UserFactory(role=Role.MANAGER)


def paypal(partner, actor=None):
    return save_payout_account(
        partner,
        PayoutDetails(method="paypal", paypal_email=f"pay{partner.id}@example.org"),
        actor or partner.user,
    )


def item_id_of(db, line) -> int | None:
    """The payout item a commission line is in, straight from payout_lines."""
    return db.session.scalar(sa.select(PayoutLine.payout_item_id).where(PayoutLine.commission_id == line.id))


def at_cutoff(days_before: int) -> datetime:
    return datetime(2026, 11, 15, tzinfo=UTC) - timedelta(days=days_before)


def test_batch_pays_partners_at_or_above_the_minimum_and_carries_over_the_rest(db, program):
    rich, exact, poor = PartnerFactory(), PartnerFactory(), PartnerFactory()
    for partner in (rich, exact, poor):
        paypal(partner)
    earn(rich, 6000, at=at_cutoff(5))
    earn(rich, 1500, at=at_cutoff(3))
    earn(exact, 5000, at=at_cutoff(2))
    earn(poor, 4999, at=at_cutoff(2))
    late = earn(rich, 900, at=at_cutoff(-1))  # confirmed after the cut-off: next period

    batch, created = settle(program, AS_OF)
    assert created
    assert batch.period_end == date(2026, 11, 15)
    assert batch.period_start == date(2026, 10, 15)
    assert {(i.partner_id, i.amount_minor, i.status) for i in batch.items} == {
        (rich.id, 7500, "pending"),
        (exact.id, 5000, "pending"),
    }
    assert item_id_of(db, late) is None
    assert payouts.confirmed_balance(poor.id) == 4999  # carried over
    assert payouts.confirmed_balance(rich.id) == 900


def test_settling_twice_gives_the_same_single_batch(db, program):
    partner = PartnerFactory()
    paypal(partner)
    earn(partner, 8000, at=at_cutoff(5))
    first, created = settle(program, AS_OF)
    earn(partner, 9000, at=at_cutoff(4))  # arrives late: belongs to no batch until the next date
    again, created_again = settle(program, AS_OF)
    assert (created, created_again) == (True, False)
    assert again.id == first.id
    assert db.session.scalar(sa.select(sa.func.count()).select_from(PayoutBatch)) == 1
    assert [i.amount_minor for i in again.items] == [8000]


def test_pending_lines_are_confirmed_by_settlement_when_their_hold_ends(db, program):
    partner = PartnerFactory()
    paypal(partner)
    line = earn(partner, 6000, confirmed=False, at=at_cutoff(40))  # confirm_after = cut-off - 10 days
    batch, _ = settle(program, AS_OF, now=datetime(2026, 11, 20, tzinfo=UTC))
    db.session.refresh(line)
    assert line.status == "confirmed"
    assert item_id_of(db, line) == batch.items[0].id


def test_partners_without_payout_details_are_held_back(db, program):
    ready, missing = PartnerFactory(), PartnerFactory()
    paypal(ready)
    earn(ready, 6000, at=at_cutoff(5))
    unpaid = earn(missing, 7000, at=at_cutoff(5))
    batch, _ = settle(program, AS_OF)
    statuses = {i.partner_id: i.status for i in batch.items}
    assert statuses == {ready.id: "pending", missing.id: "held"}
    assert item_id_of(db, unpaid) is None
    assert payouts.batch_total(batch) == 6000


def test_refund_after_payout_is_clawed_back_and_netted_next_time(db, program, manager):
    partner = PartnerFactory()
    paypal(partner)
    line = earn(partner, 6000, at=at_cutoff(5))
    # Settled, paid and refunded on a known day: the clawback is confirmed "now", which must
    # fall before the December cut-off whatever day the suite runs.
    with time_machine.travel(datetime(2026, 11, 20, 9, 0, tzinfo=UTC), tick=False):
        batch, _ = settle(program, AS_OF)
        payouts.approve_batch(batch, manager)
        payouts.mark_item_paid(batch.items[0], manager, "PP-1", utcnow().date())
        tracking.refund_conversion(line.conversion, None, "returned")
    clawback = db.session.scalars(sa.select(Commission).where(Commission.kind == "clawback")).one()
    assert (clawback.amount_minor, clawback.status, clawback.reason_code) == (-6000, "confirmed", "refund")
    assert payouts.confirmed_balance(partner.id) == -6000

    # Negative: not paid, however much time passes, until new earnings cover it.
    earn(partner, 9000, at=datetime(2026, 12, 10, tzinfo=UTC))
    nothing, _ = settle(program, date(2026, 12, 16))
    assert nothing is None
    earn(partner, 3000, at=datetime(2026, 12, 20, tzinfo=UTC))
    january, _ = settle(program, date(2027, 1, 16))
    assert [i.amount_minor for i in january.items] == [6000]  # 9000 + 3000 - 6000


def test_failed_payment_returns_the_lines_to_the_balance(db, program, manager):
    partner = PartnerFactory()
    paypal(partner)
    lines = [earn(partner, 3000, at=at_cutoff(5)), earn(partner, 3000, at=at_cutoff(4))]
    batch, _ = settle(program, AS_OF)
    payouts.approve_batch(batch, manager)
    item = batch.items[0]
    payouts.mark_item_failed(item, manager, "PayPal account closed")
    assert item.status == "failed"
    assert batch.status == "closed"
    for line in lines:
        assert item_id_of(db, line) is None
    assert payouts.confirmed_balance(partner.id) == 6000
    december, _ = settle(program, date(2026, 12, 15))
    assert [i.amount_minor for i in december.items] == [6000]


def test_payment_bad_input_changes_nothing(db, program, manager):
    partner = PartnerFactory()
    paypal(partner)
    earn(partner, 6000, at=at_cutoff(5))
    batch, _ = settle(program, AS_OF)
    item = batch.items[0]
    with pytest.raises(DomainError, match="Approve the batch"):
        payouts.mark_item_paid(item, manager, "X", date(2026, 11, 20))
    with pytest.raises(DomainError, match="Approve the batch"):
        payouts.export_csv(batch)
    payouts.approve_batch(batch, manager)
    with pytest.raises(DomainError, match="waiting for review"):
        payouts.approve_batch(batch, manager)
    with pytest.raises(DomainError, match="reference"):
        payouts.mark_item_paid(item, manager, "  ", date(2026, 11, 20))
    with pytest.raises(DomainError, match="payment date"):
        payouts.mark_item_paid(item, manager, "X", date(2020, 1, 1))
    assert item.status == "pending"
    payouts.mark_item_paid(item, manager, "PP-9", utcnow().date())
    with pytest.raises(DomainError, match="already recorded as paid"):
        payouts.mark_item_paid(item, manager, "PP-10", utcnow().date())
    with pytest.raises(DomainError, match="cannot be marked failed"):
        payouts.mark_item_failed(item, manager, "oops")
    with pytest.raises(DomainError, match="already recorded"):
        payouts.mark_batch_paid(batch, manager, "PP-11", utcnow().date())
    assert (item.status, item.reference) == ("paid", "PP-9")
    actions = db.session.scalars(sa.select(AuditEvent.action).where(AuditEvent.action.like("payout.%"))).all()
    assert actions.count("payout.item_paid") == 1


def test_export_files_parse_back_to_the_same_totals(db, program, manager):
    partners = [PartnerFactory() for _ in range(3)]
    paypal(partners[0])
    paypal(partners[1])
    save_payout_account(
        partners[2],
        PayoutDetails(
            method="bank", account_holder="Ana Bank", iban="DE89 3704 0044 0532 0130 00", bic="COBADEFFXXX"
        ),
        partners[2].user,
    )
    for n, partner in enumerate(partners):
        earn(partner, 5001 + n * 1234, at=at_cutoff(5))
    batch, _ = settle(program, AS_OF)
    payouts.approve_batch(batch, manager)

    rows = list(csv.DictReader(io.StringIO(payouts.export_csv(batch))))
    earned = 5001 + 6235 + 7469  # what the lines came to, not what the batch says
    assert (
        sum(Decimal(r["amount"]) for r in rows)
        == Decimal(earned) / 100
        == Decimal(payouts.batch_total(batch)) / 100
    )
    assert {r["partner_ref"] for r in rows} == {p.ref_code for p in partners}
    assert "iban=DE89370400440532013000" in next(r["destination"] for r in rows if r["method"] == "bank")
    assert {r["method"] for r in rows} == {"paypal", "bank"}
    paypal_rows = list(csv.reader(io.StringIO(payouts.export_paypal(batch))))
    assert len(paypal_rows) == 2
    assert all(row[0].endswith("@example.org") and row[2] == "USD" for row in paypal_rows)
    paypal_total = sum(i.amount_minor for i in batch.items if i.method == "paypal")
    assert sum(Decimal(row[1]) for row in paypal_rows) == Decimal(paypal_total) / 100


@pytest.mark.parametrize(
    ("details", "field"),
    [
        (PayoutDetails(method="paypal", paypal_email="not-an-email"), "paypal_email"),
        (PayoutDetails(method="paypal", paypal_email=""), "paypal_email"),
        (PayoutDetails(method="bank", account_holder="A", iban="DE89 3704 0044 0532 0130 01"), "iban"),
        (PayoutDetails(method="bank", account_holder="", iban="DE89370400440532013000"), "account_holder"),
        (PayoutDetails(method="bank", account_holder="A", iban="DE89370400440532013000", bic="12"), "bic"),
        (PayoutDetails(method="other", other_instructions=" "), "other_instructions"),
        (PayoutDetails(method="cash"), "method"),
    ],
)
def test_payout_details_are_validated(db, program, details, field):
    partner = PartnerFactory()
    with pytest.raises(DomainError) as error:
        save_payout_account(partner, details, partner.user)
    assert error.value.field == field
    assert payouts.account_of(partner) is None


def test_payout_details_change_is_audited_without_the_values(db, program):
    partner = PartnerFactory()
    paypal(partner)
    save_payout_account(
        partner,
        PayoutDetails(method="bank", account_holder="Pat", iban="GB82WEST12345698765432"),
        partner.user,
    )
    account = payouts.account_of(partner)
    assert (account.method, account.iban, account.paypal_email) == ("bank", "GB82WEST12345698765432", None)
    events = db.session.scalars(
        sa.select(AuditEvent).where(AuditEvent.action == "payout.details_changed")
    ).all()
    assert len(events) == 2
    assert "iban" in events[1].data["fields"]
    assert "GB82" not in str(events[1].data)


@pytest.mark.parametrize(
    "iban", ["DE89370400440532013000", "GB82 WEST 1234 5698 7654 32", "NL91ABNA0417164300"]
)
def test_valid_ibans(iban):
    assert iban_is_valid(iban)


@pytest.mark.parametrize("iban", ["DE89370400440532013001", "XX00", "", "DE8937040044053201300!"])
def test_invalid_ibans(iban):
    assert not iban_is_valid(iban)


def test_withdrawal(db, program):
    partner = PartnerFactory()
    earn(partner, 6000)
    with pytest.raises(DomainError, match="on its schedule only"):
        payouts.request_withdrawal(program, partner)
    program.allow_withdrawals = True
    with pytest.raises(DomainError, match="payout details"):
        payouts.request_withdrawal(program, partner)
    paypal(partner)
    batch = payouts.request_withdrawal(program, partner)
    assert (batch.kind, batch.status, [i.amount_minor for i in batch.items]) == (
        "withdrawal",
        "review",
        [6000],
    )
    assert payouts.confirmed_balance(partner.id) == 0
    with pytest.raises(DomainError, match="minimum"):
        payouts.request_withdrawal(program, partner)


def test_earnings_figures_follow_the_money(db, program, manager):
    partner = PartnerFactory()
    paypal(partner)
    earn(partner, 1000, confirmed=False, at=utcnow())
    earn(partner, 6000, at=at_cutoff(5))
    assert payouts.earnings_of(partner.id) == payouts.Earnings(
        pending=1000, confirmed=6000, in_payout=0, paid=0
    )
    batch, _ = settle(program, AS_OF, now=datetime(2026, 11, 16, tzinfo=UTC))
    assert payouts.earnings_of(partner.id).in_payout == 6000
    payouts.approve_batch(batch, manager)
    payouts.mark_item_paid(batch.items[0], manager, "PP-1", utcnow().date())
    figures = payouts.earnings_of(partner.id)
    assert (figures.in_payout, figures.paid, figures.confirmed) == (0, 6000, 0)
    ledger = payouts.ledger_csv(partner.id)
    assert "PP-1" in ledger
    assert ",paid," in ledger
    assert db.session.scalar(sa.select(sa.func.count()).select_from(PayoutItem)) == 1


def _earnings_from_the_lines(partner_id: int) -> payouts.Earnings:
    """The four figures summed line by line through the whole ledger (what earnings_of must equal)."""
    lines = db_lines(partner_id)
    return payouts.Earnings(
        pending=sum(c.amount_minor for c in lines if c.status == "pending"),
        confirmed=sum(c.amount_minor for c in lines if c.status == "confirmed" and c.payout_item is None),
        in_payout=sum(c.amount_minor for c in lines if c.payout_item and c.payout_item.status == "pending"),
        paid=sum(c.amount_minor for c in lines if c.payout_item and c.payout_item.status == "paid"),
    )


def db_lines(partner_id: int) -> list[Commission]:
    from portal.extensions import db

    db.session.expire_all()
    return list(db.session.scalars(sa.select(Commission).where(Commission.partner_id == partner_id)))


def test_earnings_read_from_payout_items_equal_the_ledger_line_by_line(db, program, manager):
    partner, other = PartnerFactory(), PartnerFactory()
    paypal(partner)
    paypal(other)
    sold = earn(partner, 6000, at=at_cutoff(5))
    earn(partner, 2500, at=at_cutoff(4))
    earn(other, 9000, at=at_cutoff(4))
    november, _ = settle(program, AS_OF)
    payouts.approve_batch(november, manager)
    mine = next(i for i in november.items if i.partner_id == partner.id)
    theirs = next(i for i in november.items if i.partner_id == other.id)
    payouts.mark_item_paid(mine, manager, "PP-1", utcnow().date())
    payouts.mark_item_failed(theirs, manager, "account closed")
    tracking.refund_conversion(sold.conversion, 3000 * 10 // 2, "half returned")  # a clawback
    earn(partner, 7000, at=datetime(2026, 12, 10, tzinfo=UTC))
    earn(partner, 400, confirmed=False, at=utcnow())
    december, _ = settle(program, date(2026, 12, 16))
    assert december is not None
    for who in (partner, other):
        assert payouts.earnings_of(who.id) == _earnings_from_the_lines(who.id)
    assert payouts.earnings_of(partner.id).paid == 8500

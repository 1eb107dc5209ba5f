"""The ledger's invariants: books built through the real services hold them; one corrupted row
of each kind is named by check_ledger and makes ``flask portal check-ledger`` exit 1; each
database constraint and trigger refuses its bad write (SQLite and PostgreSQL)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa
import time_machine

from portal.extensions import db as _db
from portal.models import (
    AuditEvent,
    Commission,
    Conversion,
    LadderStep,
    PayoutBatch,
    PayoutItem,
    PayoutLine,
    Refund,
    Role,
)
from portal.services import ledger, payouts, rewards, tracking
from portal.services.ledger import CHECKS, check_ledger
from portal.services.payouts import PayoutDetails, save_payout_account
from tests.factories import PartnerFactory, ProgramFactory, UserFactory

START = datetime(2026, 9, 1, 9, 0, tzinfo=UTC)
END = datetime(2026, 11, 10, 9, 0, tzinfo=UTC)  # the clock when the books are done

# The books are built and checked on a clock of their own (time-machine at START, moved to END);
# the harness pins START from before each test's first fixture (marker ``own_clock``), so a run with
# the clock pinned elsewhere (``make test``'s --clock run) would repeat these tests exactly: it
# leaves them out.
pytestmark = [pytest.mark.postgres, pytest.mark.own_clock(START)]


@dataclass
class Books:
    """Rows of the clean books that the corruptions pick from."""

    plain: Conversion  # pending (its hold ends on 15 November), nothing refunded
    partial: Conversion  # partly refunded
    rejected: Conversion  # rejected by an operator
    unrefunded_other: Conversion  # confirmed, its partner held back (no payout details)
    paid_item: PayoutItem
    failed_item: PayoutItem
    approved_batch: PayoutBatch  # approved, one item still waiting
    waiting_item: PayoutItem


def _sale(program, partner, tx: str, amount: int) -> Conversion:
    conversion, created = tracking.record_conversion(
        program,
        tracking.ConversionInput(tx, amount, "USD", ref=partner.ref_code, customer_id=f"cus-{tx}"),
        {"transaction_id": tx},
    )
    assert created
    return conversion


def build_books(traveller) -> Books:
    """Sales, refunds, a rejection, a ladder bonus, a paid, a failed and a waiting payment, a
    clawback and a withdrawal, all through the services, with the clock moved by ``traveller``."""
    program = ProgramFactory(
        currency="USD",
        timezone="UTC",
        payout_schedule="monthly",
        payout_day=15,
        minimum_payout_minor=1000,
        hold_period_days=30,
        allow_withdrawals=True,
    )
    manager = UserFactory(role=Role.MANAGER)
    partners = [PartnerFactory() for _ in range(4)]
    for partner in partners[:3]:  # the fourth has no payout details: held back
        save_payout_account(
            partner, PayoutDetails(method="paypal", paypal_email=f"p{partner.id}@example.org"), partner.user
        )
    _db.session.add(LadderStep(threshold_conversions=3, bonus_minor=700))
    _db.session.flush()
    sales = {}
    for n, partner in enumerate(partners):
        for k in range(3):
            sales[n, k] = _sale(program, partner, f"tx-{n}-{k}", 10_000 + 1234 * k + 5 * n)
    tracking.refund_conversion(sales[0, 1], 3_333, "part returned")
    tracking.refund_conversion(sales[0, 1], 1_111, "more returned")
    tracking.refund_conversion(sales[1, 2], None, "all returned")
    tracking.reject_conversion(sales[2, 2], manager, "fraud_risk", None)
    traveller.move_to(datetime(2026, 10, 2, 9, 0, tzinfo=UTC))
    rewards.close_month(program, "2026-09")
    traveller.move_to(datetime(2026, 10, 16, 9, 0, tzinfo=UTC))
    batch, created = payouts.settle(program, date(2026, 10, 16))
    assert created
    payouts.approve_batch(batch, manager)
    items = {item.partner_id: item for item in batch.items}
    paid = payouts.mark_item_paid(items[partners[0].id], manager, "REF-1", date(2026, 10, 16))
    failed = payouts.mark_item_failed(items[partners[1].id], manager, "bounced")
    waiting = items[partners[2].id]
    tracking.refund_conversion(sales[0, 0], 2_000, "after payout: a clawback")
    plain = _sale(program, partners[2], "tx-late", 8_000)
    traveller.move_to(END)
    payouts.confirm_due_commissions(END)
    payouts.request_withdrawal(program, partners[1])
    _db.session.flush()
    _db.session.expire_all()
    return Books(
        plain=plain,
        partial=sales[0, 1],
        rejected=sales[2, 2],
        unrefunded_other=sales[3, 0],
        paid_item=paid,
        failed_item=failed,
        approved_batch=batch,
        waiting_item=waiting,
    )


@pytest.fixture
def books(db, database_backend):
    with time_machine.travel(START, tick=False) as traveller:
        yield build_books(traveller)


def _kinds(violations) -> set[str]:
    return {v.kind for v in violations}


def test_books_built_through_the_services_hold_every_invariant(books):
    violations = check_ledger()
    assert violations == []
    # What the books hold, so the checks are not vacuous.
    kinds = set(_db.session.scalars(sa.select(Commission.kind).distinct()))
    assert {"base", "bonus", "reversal", "clawback"} <= kinds
    statuses = set(_db.session.scalars(sa.select(PayoutItem.status).distinct()))
    assert statuses == {"paid", "failed", "pending", "held"}


def test_check_ledger_command_exits_0_on_clean_books(db, database_backend, runner):
    with time_machine.travel(START, tick=False) as traveller:
        build_books(traveller)
        result = runner.invoke(args=["portal", "check-ledger"])
    assert result.exit_code == 0, result.output
    assert "check-ledger: 0 violations" in result.output


def _bypassing_triggers(statement: str, **params):
    def corrupt(books: Books) -> None:
        with ledger.without_ledger_triggers(_db.session.connection()):
            _db.session.execute(sa.text(statement), params | _ids(books))

    return corrupt


def _sql(statement: str, **params):
    def corrupt(books: Books) -> None:
        _db.session.execute(sa.text(statement), params | _ids(books))

    return corrupt


def _ids(books: Books) -> dict:
    line = lambda conversion: min(c.id for c in conversion.commissions)  # noqa: E731 - its first (earning) line
    return {
        "plain": books.plain.id,
        "plain_line": line(books.plain),
        "partial": books.partial.id,
        "partial_line": line(books.partial),
        "rejected": books.rejected.id,
        "rejected_line": line(books.rejected),
        "other_line": line(books.unrefunded_other),
        "plain_partner": books.plain.partner_id,
        "rejected_partner": books.rejected.partner_id,
        "other_partner": books.unrefunded_other.partner_id,
        "partial_partner": books.partial.partner_id,
        "paid_item": books.paid_item.id,
        "failed_item": books.failed_item.id,
        "waiting_item": books.waiting_item.id,
        "approved_batch": books.approved_batch.id,
        "now": END.replace(tzinfo=None).isoformat(" "),
    }


_INSERT_LINE = (
    "INSERT INTO commissions (conversion_id, partner_id, kind, amount_minor, currency, status, "
    "confirm_after, reverses_id, reason_code, explanation, created_at) VALUES "
)

# (name, corruption, the kinds of violation it must add — one, or the ones it implies).
CORRUPTIONS = [
    (
        "an earning line rewritten",
        _bypassing_triggers("UPDATE commissions SET amount_minor = amount_minor + 1 WHERE id = :plain_line"),
        {"line_rule"},
    ),
    (
        "an extra reversal on a conversion",
        _sql(
            _INSERT_LINE + "(:partial, :partial_partner, 'reversal', -1, "
            "'USD', 'pending', :now, :partial_line, 'refund', '{}', :now)"
        ),
        {"conversion_net"},
    ),
    (
        "a rejected conversion earning again",
        _sql(
            _INSERT_LINE + "(:rejected, :rejected_partner, 'bonus', 50, 'USD', 'pending', :now, NULL, NULL, "
            '\'{"rule": "campaign_bonus", "bonus_minor": 50}\', :now)'
        ),
        {"rejected_net"},
    ),
    (
        "a reversal taking back more than the line earned",
        _sql(
            _INSERT_LINE + "(:rejected, :rejected_partner, 'reversal', -1, 'USD', 'pending', :now, "
            ":rejected_line, 'fraud_risk', '{}', :now)"
        ),
        {"reversal_exceeds", "rejected_net"},
    ),
    (
        "a reversal of another conversion's line",
        _sql(
            _INSERT_LINE + "(:plain, :plain_partner, 'reversal', 0, 'USD', 'pending', :now, :other_line, "
            "'refund', '{}', :now)"
        ),
        {"reversal_target"},
    ),
    (
        "a refund row that the conversion does not count",
        _sql(
            "INSERT INTO refunds (conversion_id, refund_id, amount_minor, currency, request_fingerprint, "
            "created_at) VALUES (:plain, 'r-1', 100, 'USD', 'x', :now)"
        ),
        {"refunds_sum"},
    ),
    (
        "a sale in another currency whose amount is not its original at its rate",
        _bypassing_triggers(
            "UPDATE conversions SET original_amount_minor = amount_minor, original_currency = 'EUR', "
            "original_refunded_minor = refunded_minor, fx_rate = '2', fx_rate_day = '2026-11-01', "
            "fx_source = 'ecb' WHERE id = :plain"
        ),
        {"fx_amounts"},
    ),
    (
        "a payout item rewritten",
        _bypassing_triggers(
            "UPDATE payout_items SET amount_minor = amount_minor + 1 WHERE id = :waiting_item"
        ),
        {"item_total", "partner_balance"},
    ),
    (
        "a line slipped into a failed item",
        _sql("INSERT INTO payout_lines (commission_id, payout_item_id) VALUES (:other_line, :failed_item)"),
        {"item_total", "partner_balance", "payout_line"},
    ),
    (
        "a payout row for a line that does not exist",
        _sql("INSERT INTO payout_lines (commission_id, payout_item_id) VALUES (987654321, :waiting_item)"),
        {"payout_line"},
    ),
    (
        "a running balance rewritten",
        _sql(
            "INSERT INTO partner_balances (partner_id, currency, confirmed_minor, settled_minor) "
            "VALUES (:plain_partner, 'USD', 1, 0) ON CONFLICT (partner_id, currency) "
            "DO UPDATE SET confirmed_minor = partner_balances.confirmed_minor + 1"
        ),
        {"running_balance"},
    ),
    (
        "a batch closed with a payment still waiting",
        _sql("UPDATE payout_batches SET status = 'closed' WHERE id = :approved_batch"),
        {"batch_items"},
    ),
    (
        "a payment without its audit event",
        _sql(
            "DELETE FROM audit_events WHERE action = 'payout.item_paid' AND subject_type = 'payout_item' "
            "AND subject_id = :paid_item"
        ),
        {"audit_missing"},
    ),
]


def test_every_check_has_a_corruption_that_it_catches():
    assert set().union(*(kinds for _name, _corrupt, kinds in CORRUPTIONS)) == set(CHECKS)


@pytest.mark.parametrize(("corrupt", "expected"), [pytest.param(c, k, id=name) for name, c, k in CORRUPTIONS])
def test_one_corrupted_row_is_named_and_the_command_exits_1(books, runner, corrupt, expected):
    before = set(check_ledger())
    corrupt(books)
    _db.session.expire_all()
    after = check_ledger()
    new = [v for v in after if v not in before]
    assert _kinds(new) == expected, [str(v) for v in new]
    assert set(after) >= before  # nothing else changed
    result = runner.invoke(args=["portal", "check-ledger"])
    assert result.exit_code == 1
    for violation in new:
        assert str(violation) in result.output


# --- the database refuses ---------------------------------------------------------------------------


def _refused(statement: str, params: dict) -> None:
    savepoint = _db.session.begin_nested()
    with pytest.raises(sa.exc.IntegrityError):
        _db.session.execute(sa.text(statement), params)
    savepoint.rollback()


REFUSED = [
    ("a line's amount rewritten", "UPDATE commissions SET amount_minor = 1 WHERE id = :plain_line"),
    (
        "a line moved to another partner",
        "UPDATE commissions SET partner_id = :other_partner WHERE id = :plain_line",
    ),
    ("a line's kind rewritten", "UPDATE commissions SET kind = 'deal' WHERE id = :plain_line"),
    ("a confirmed line back to pending", "UPDATE commissions SET status = 'pending' WHERE id = :other_line"),
    ("a line deleted", "DELETE FROM commissions WHERE id = :plain_line"),
    (
        "a reversal naming no line",
        _INSERT_LINE
        + "(:plain, :plain_partner, 'reversal', -1, 'USD', 'pending', :now, NULL, 'refund', '{}', :now)",
    ),
    (
        "an earning line naming a line",
        _INSERT_LINE
        + "(:plain, :plain_partner, 'base', 1, 'USD', 'pending', :now, :plain_line, NULL, '{}', :now)",
    ),
    (
        "a conversion's amount rewritten",
        "UPDATE conversions SET amount_minor = amount_minor + 1 WHERE id = :plain",
    ),
    ("a refund undone", "UPDATE conversions SET refunded_minor = 0 WHERE id = :partial"),
    (
        "a refund beyond the sale",
        "UPDATE conversions SET refunded_minor = amount_minor + 1 WHERE id = :plain",
    ),
    (
        "a rejection undone",
        "UPDATE conversions SET status = 'pending', rejection_reason = NULL WHERE id = :rejected",
    ),
    ("a conversion deleted", "DELETE FROM conversions WHERE transaction_id = 'orphan'"),
    (
        "a paid item failed",
        "UPDATE payout_items SET status = 'failed', failure_reason = 'x' WHERE id = :paid_item",
    ),
    ("a paid item paid again", "UPDATE payout_items SET reference = 'REF-2' WHERE id = :paid_item"),
    (
        "a failed item paid",
        "UPDATE payout_items SET status = 'paid', reference = 'R', paid_on = '2026-11-20' "
        "WHERE id = :failed_item",
    ),
    (
        "a waiting item's amount rewritten",
        "UPDATE payout_items SET amount_minor = 1 WHERE id = :waiting_item",
    ),
    ("an item deleted", "DELETE FROM payout_items WHERE id = :failed_item"),
    ("an item in no currency", "UPDATE payout_items SET currency = 'US' WHERE id = :waiting_item"),
    ("a batch in no currency", "UPDATE payout_batches SET currency = 'US' WHERE id = :approved_batch"),
    (
        "a line twice in payouts",
        "INSERT INTO payout_lines (commission_id, payout_item_id) "
        "SELECT commission_id, :waiting_item FROM payout_lines WHERE payout_item_id = :paid_item",
    ),
    ("a refund rewritten", "UPDATE refunds SET amount_minor = amount_minor + 1 WHERE refund_id = 'kept'"),
    ("a refund deleted", "DELETE FROM refunds WHERE refund_id = 'kept'"),
]


@pytest.mark.parametrize("statement", [pytest.param(s, id=name) for name, s in REFUSED])
def test_the_database_refuses(books, statement):
    # Rows for the statements that need one: a conversion without lines, a refund.
    _db.session.execute(
        sa.insert(Conversion).values(
            transaction_id="orphan",
            amount_minor=100,
            currency="USD",
            request_fingerprint="x",
            occurred_at=START,
            created_at=START,
            status="pending",
            refunded_minor=0,
        )
    )
    _db.session.add(
        Refund(
            conversion_id=books.partial.id,
            refund_id="kept",
            amount_minor=1,
            currency="USD",
            request_fingerprint="x",
        )
    )
    _db.session.flush()
    _refused(statement, _ids(books))


def test_the_writes_the_services_make_are_still_allowed(books):
    """What the triggers let through: a line confirmed, an item paid or held and released with
    a new amount, a refund's stored answer written after it."""
    ids = _ids(books)
    _db.session.execute(
        sa.text("UPDATE commissions SET status = 'confirmed', confirmed_at = :now WHERE id = :plain_line"),
        ids,
    )
    _db.session.execute(
        sa.text(
            "UPDATE payout_items SET status = 'paid', reference = 'R', paid_on = '2026-11-10' "
            "WHERE id = :waiting_item"
        ),
        ids,
    )
    held = _db.session.scalars(sa.select(PayoutItem).where(PayoutItem.status == "held")).first()
    _db.session.execute(
        sa.update(PayoutItem).where(PayoutItem.id == held.id).values(amount_minor=held.amount_minor + 5)
    )
    refund = Refund(
        conversion_id=books.partial.id, refund_id="r", amount_minor=1, currency="USD", request_fingerprint="x"
    )
    _db.session.add(refund)
    _db.session.flush()
    refund.response = {"status": "ok"}
    _db.session.flush()
    assert _db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) > 0


def test_throw_away_data_can_still_be_removed(books):
    ids = _ids(books)
    with ledger.without_ledger_triggers(_db.session.connection()):
        _db.session.execute(sa.delete(PayoutLine))
        _db.session.execute(sa.delete(PayoutItem))
        _db.session.execute(sa.delete(Commission).where(Commission.reverses_id.is_not(None)))
        _db.session.execute(sa.delete(Commission))
    assert _db.session.scalar(sa.select(sa.func.count()).select_from(Commission)) == 0
    # ...and the triggers are back.
    _refused("DELETE FROM conversions WHERE id = :plain", ids)

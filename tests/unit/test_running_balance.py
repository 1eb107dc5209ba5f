"""The partners' running balances (``partner_balances``, kept by the triggers of migration 0021)
equal a recount from the rows after any sequence of writes, on SQLite and PostgreSQL.

The triggers are per row on SQLite and per statement on PostgreSQL (over transition tables),
so the random sequences write several rows per statement, of several partners and two
currencies: lines inserted pending or confirmed, confirmed in bulk, items inserted, paid,
failed, held and released (with a new amount), and throw-away rows deleted. After each step
the stored totals must equal ``ledger.balance_recount()`` and ``payouts.confirmed_balance``
the sum of the partner's confirmed lines in no payout, as it was counted before the totals.
"""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import date

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal.extensions import db as _db
from portal.models import Commission, CommissionStatus, PartnerBalance, PayoutItem, PayoutLine
from portal.models.types import utcnow
from portal.services import payouts
from portal.services.ledger import balance_recount, check_ledger, without_ledger_triggers
from tests.factories import CommissionFactory, PartnerFactory, PayoutBatchFactory, ProgramFactory, earn

pytestmark = pytest.mark.postgres

PARTNERS = 3
CURRENCIES = ("USD", "EUR")
_references = itertools.count(1)

OPERATIONS = ("earn", "items", "pay", "hold", "release", "fail", "earn_pending", "confirm", "delete")
# One step: (operation, partners it touches, currency, amount, a number to pick rows with)
STEPS = st.lists(
    st.tuples(
        st.sampled_from(OPERATIONS),
        st.sets(st.integers(0, PARTNERS - 1), min_size=1, max_size=PARTNERS),
        st.sampled_from(CURRENCIES),
        st.integers(1, 90_000),
        st.integers(0, 1_000),
    ),
    min_size=2,
    max_size=14,
)


def _stored() -> dict[tuple[int, str], tuple[int, int]]:
    rows = _db.session.execute(sa.select(*PartnerBalance.__table__.c))
    return {(r.partner_id, r.currency): (int(r.confirmed_minor), int(r.settled_minor)) for r in rows}


def _counted() -> dict[tuple[int, str], tuple[int, int]]:
    return {
        (r.partner_id, r.currency): (int(r.confirmed_minor), int(r.settled_minor))
        for r in _db.session.execute(balance_recount())
    }


def _unpaid_lines_sum(partner_id: int) -> int:
    """The confirmed balance as it was read before the running totals: every line summed."""
    in_a_payout = sa.exists().where(PayoutLine.commission_id == Commission.id)
    return int(
        _db.session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(Commission.amount_minor), 0)).where(
                Commission.partner_id == partner_id,
                Commission.status == CommissionStatus.CONFIRMED,
                ~in_a_payout,
            )
        )
    )


def _assert_exact(partners) -> None:
    _db.session.flush()
    stored, counted = _stored(), _counted()
    # A row may stay at zero after its rows were deleted; a missing row is zero too.
    keys = set(stored) | set(counted)
    assert {k: stored.get(k, (0, 0)) for k in keys} == {k: counted.get(k, (0, 0)) for k in keys}
    for partner in partners:
        assert payouts.confirmed_balance(partner.id) == _unpaid_lines_sum(partner.id)


class Books:
    """Lines and items written the way the services write them, several rows per statement."""

    def __init__(self, partners):
        self.partners = partners

    def earn(self, who, currency, amount, confirmed):
        for index in who:
            CommissionFactory(
                conversion__partner=self.partners[index],
                amount_minor=amount + index,
                currency=currency,
                status="confirmed" if confirmed else "pending",
            )

    def confirm(self, who):
        # One UPDATE of many rows, as confirm_due_commissions sends it.
        _db.session.execute(
            sa.update(Commission)
            .where(
                Commission.status == CommissionStatus.PENDING,
                Commission.partner_id.in_([self.partners[i].id for i in who]),
            )
            .values(status=CommissionStatus.CONFIRMED, confirmed_at=utcnow())
        )

    def items(self, who, pick):
        """Per currency, one batch whose items (one INSERT) hold their partner's unpaid lines;
        returns whether any item was made."""
        made = [self._items(who, currency, pick) for currency in CURRENCIES]  # each currency
        return any(made)

    def _items(self, who, currency, pick):
        """One item per partner in one INSERT, each with the partner's unpaid lines in it (so the
        items equal their lines, as settlement writes them); a partner without any is skipped."""
        batch = PayoutBatchFactory(kind="withdrawal", currency=currency, period_end=date(2026, 11, 15))
        _db.session.flush()
        rows, lines = [], []
        for index in who:
            partner = self.partners[index]
            unpaid = _db.session.execute(
                sa.select(Commission.id, Commission.amount_minor).where(
                    Commission.partner_id == partner.id,
                    Commission.currency == currency,
                    Commission.status == CommissionStatus.CONFIRMED,
                    ~sa.exists().where(PayoutLine.commission_id == Commission.id),
                )
            ).all()
            total = sum(amount for _id, amount in unpaid)
            if total <= 0:
                continue
            held = pick % 3 == 0
            rows.append(
                {
                    "batch_id": batch.id,
                    "partner_id": partner.id,
                    "amount_minor": total,
                    "currency": currency,
                    "status": "held" if held else "pending",
                    "hold_reason": "suspended" if held else None,
                    "destination": {},
                }
            )
            if not held:
                lines.append((partner.id, [line_id for line_id, _amount in unpaid]))
        if not rows:
            return False
        made = dict(
            _db.session.execute(
                sa.insert(PayoutItem).returning(PayoutItem.partner_id, PayoutItem.id), rows
            ).all()
        )
        links = [{"commission_id": c, "payout_item_id": made[p]} for p, ids in lines for c in ids]
        if links:
            _db.session.execute(sa.insert(PayoutLine), links)
        return True

    def _items_of(self, who, status):
        return list(
            _db.session.scalars(
                sa.select(PayoutItem.id).where(
                    PayoutItem.status == status,
                    PayoutItem.partner_id.in_([self.partners[i].id for i in who]),
                )
            )
        )

    def pay(self, who):
        ids = self._items_of(who, "pending")
        if ids:
            _db.session.execute(
                sa.update(PayoutItem)
                .where(PayoutItem.id.in_(ids))
                .values(status="paid", reference=f"R-{next(_references)}", paid_on=date(2026, 11, 16))
            )

    def fail(self, who):
        """Failed payments give their lines back (as mark_item_failed does), in bulk."""
        ids = self._items_of(who, "pending")
        if ids:
            _db.session.execute(sa.delete(PayoutLine).where(PayoutLine.payout_item_id.in_(ids)))
            _db.session.execute(
                sa.update(PayoutItem)
                .where(PayoutItem.id.in_(ids))
                .values(status="failed", failure_reason="x")
            )

    def hold(self, who):
        ids = self._items_of(who, "pending")
        if ids:
            _db.session.execute(sa.delete(PayoutLine).where(PayoutLine.payout_item_id.in_(ids)))
            _db.session.execute(
                sa.update(PayoutItem)
                .where(PayoutItem.id.in_(ids))
                .values(status="held", hold_reason="suspended")
            )

    def release(self, who):
        """A held item joined to the partner's unpaid lines again, its amount recomputed."""
        for item_id in self._items_of(who, "held"):
            item = _db.session.get(PayoutItem, item_id)
            _db.session.execute(
                sa.insert(PayoutLine).from_select(
                    ["commission_id", "payout_item_id"],
                    sa.select(Commission.id, sa.literal(item.id)).where(
                        Commission.partner_id == item.partner_id,
                        Commission.currency == item.currency,
                        Commission.status == CommissionStatus.CONFIRMED,
                        ~sa.exists().where(PayoutLine.commission_id == Commission.id),
                    ),
                )
            )
            total = _db.session.scalar(
                sa.select(sa.func.coalesce(sa.func.sum(Commission.amount_minor), 0))
                .join(PayoutLine, PayoutLine.commission_id == Commission.id)
                .where(PayoutLine.payout_item_id == item.id)
            )
            if total > 0:
                item.amount_minor, item.status, item.hold_reason = total, "pending", None
            else:
                _db.session.execute(sa.delete(PayoutLine).where(PayoutLine.payout_item_id == item.id))
            _db.session.flush()

    def delete(self, who, pick):
        """Throw-away rows removed past the refusals: the totals follow them out."""
        partner_ids = [self.partners[i].id for i in who]
        with without_ledger_triggers(_db.session.connection()):
            items = sa.select(PayoutItem.id).where(PayoutItem.partner_id.in_(partner_ids))
            _db.session.execute(sa.delete(PayoutLine).where(PayoutLine.payout_item_id.in_(items)))
            if pick % 2:
                _db.session.execute(sa.delete(PayoutItem).where(PayoutItem.partner_id.in_(partner_ids)))
            else:
                lines = sa.select(Commission.id).where(Commission.partner_id.in_(partner_ids))
                _db.session.execute(sa.delete(PayoutLine).where(PayoutLine.commission_id.in_(lines)))
                _db.session.execute(sa.delete(Commission).where(Commission.partner_id.in_(partner_ids)))
                # their items now stand for lines that are gone: they go too
                _db.session.execute(sa.delete(PayoutItem).where(PayoutItem.partner_id.in_(partner_ids)))


REACHED: Counter[str] = Counter()  # which operations changed something, over every example


def _state() -> tuple:
    """How many lines and items there are, by status, and their sums."""
    return tuple(
        tuple(_db.session.execute(sa.select(model.status, sa.func.count(), sa.func.sum(model.amount_minor))
                                  .group_by(model.status).order_by(model.status)))
        for model in (Commission, PayoutItem)
    )  # fmt: skip


def _run(partners, steps) -> None:
    books = Books(partners)
    _assert_exact(partners)
    for operation, who, currency, amount, pick in steps:
        who = sorted(who)
        before = _state()
        if operation in ("earn", "earn_pending"):
            books.earn(who, currency, amount, confirmed=operation == "earn")
        elif operation == "confirm":
            books.confirm(who)
        elif operation == "items":
            books.items(who, pick)
        elif operation == "delete":
            books.delete(who, pick)
        else:
            getattr(books, operation)(who)
        _db.session.flush()
        REACHED[operation] += before != _state()  # it wrote something
        _assert_exact(partners)


@settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=STEPS)
def _random_sequence(steps):
    savepoint = _db.session.begin_nested()
    try:
        ProgramFactory()
        # Every sequence starts from confirmed lines in both currencies, so items have lines.
        opening = [("earn", {0, 1, 2}, currency, 5_000, 0) for currency in CURRENCIES]
        _run([PartnerFactory() for _ in range(PARTNERS)], opening + steps)
    finally:
        savepoint.rollback()
        _db.session.expunge_all()


def test_the_running_balances_equal_a_recount_after_any_writes(db, database_backend):
    REACHED.clear()
    _random_sequence()
    # The random sequences write rows through most kinds of write (which ones depends on what
    # Hypothesis draws once other tests shaped its state); the scripted test below runs every
    # kind for certain.
    reached = {name for name, count in REACHED.items() if count}
    assert {"earn", "confirm", "items"} <= reached, str(dict(REACHED))


def test_a_scripted_sequence_of_every_write_keeps_them_exact(db, database_backend):
    ProgramFactory()
    everyone = {0, 1, 2}
    _run(
        [PartnerFactory() for _ in range(PARTNERS)],
        [
            ("earn", everyone, "USD", 5_000, 0),
            ("earn", {0, 1}, "EUR", 700, 0),
            ("earn_pending", everyone, "USD", 300, 0),
            ("confirm", {0, 2}, "USD", 0, 0),
            ("items", everyone, "USD", 0, 1),  # pending items, both currencies
            ("pay", {0}, "USD", 0, 0),
            ("fail", {1}, "USD", 0, 0),
            ("earn", everyone, "USD", 4_000, 0),
            ("items", everyone, "USD", 0, 3),  # held
            ("release", {1, 2}, "USD", 0, 0),
            ("items", {0}, "USD", 0, 1),
            ("hold", {0}, "USD", 0, 0),
            ("delete", {2}, "USD", 0, 1),  # items
            ("delete", {1}, "USD", 0, 0),  # lines and items
        ],
    )


def _balance_violations():
    # Factory lines carry no rule: only the running totals' check is read here.
    return [v for v in check_ledger() if v.kind == "running_balance"]


def test_check_ledger_names_a_running_balance_that_drifted(db, database_backend):
    partner = PartnerFactory()
    earn(partner, 2_500)
    _db.session.flush()
    assert _balance_violations() == []
    _db.session.execute(
        sa.update(PartnerBalance)
        .where(PartnerBalance.partner_id == partner.id)
        .values(confirmed_minor=PartnerBalance.confirmed_minor - 1)
    )
    violations = _balance_violations()
    assert [(v.kind, v.subject_id, v.expected, v.found) for v in violations] == [
        ("running_balance", partner.id, 2_500, 2_499)
    ]


def test_the_migration_counts_existing_rows_and_recount_rewrites_them(db, database_backend):
    partners = [PartnerFactory() for _ in range(2)]
    for index, partner in enumerate(partners):
        earn(partner, 1_000 + index)
        earn(partner, 700, confirmed=False)
    _db.session.flush()
    _db.session.execute(sa.delete(PartnerBalance))
    assert len(_balance_violations()) == 2
    payouts.recount_balances()
    assert _balance_violations() == []
    assert [payouts.confirmed_balance(p.id) for p in partners] == [1_000, 1_001]

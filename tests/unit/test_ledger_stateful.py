"""Random sequences of money events through the real services; the ledger holds after every step.

A Hypothesis ``RuleBasedStateMachine`` drives sales (and their replays), partial refunds with
and without a refund id (and their replays), full refunds, rejections, the clock moving days
and months (time-machine: the hold ends, settlement runs, months close), settlement,
withdrawals, approving batches, payments marked paid or failed, refunds after payout
(clawbacks), rate and tier edits, and suspension and reinstatement. ``check_ledger()`` is an
invariant: it must be empty after every step. Runs on SQLite and on PostgreSQL.

Each example runs inside a SAVEPOINT of the test's transaction and rolls it back, so every
example starts from the same empty books.

The invariant reads only the database. After a step that sent it no INSERT, UPDATE or DELETE
(a replayed sale, a refused withdrawal, a payday with nothing due: about a third of the steps)
the books are the ones it has just passed, so it is not run on them again (``_Writes``).

Bounded by default (about a minute per database): ``LEDGER_PROFILE=default`` is
30 examples of up to 40 steps. For a long run:

    LEDGER_PROFILE=long PORTAL_TEST_POSTGRES_URL=... python -m pytest tests/unit/test_ledger_stateful.py

(``long``: 400 examples × 60 steps.)
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import time_machine
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from portal import lookups
from portal.errors import DomainError
from portal.extensions import db as _db
from portal.models import (
    BatchStatus,
    Commission,
    Conversion,
    ConversionStatus,
    ItemStatus,
    LadderStep,
    PartnerStatus,
    PayoutBatch,
    PayoutItem,
    PayoutLine,
    Role,
)
from portal.models.types import utcnow
from portal.services import accounts, payouts, reward_rules, rewards, schedule, tracking
from portal.services.ledger import check_ledger
from portal.services.payouts import PayoutDetails, save_payout_account
from tests.factories import PartnerFactory, ProgramFactory, UserFactory

pytestmark = pytest.mark.postgres


settings.register_profile(
    "ledger-default",
    max_examples=30,
    stateful_step_count=40,
    derandomize=True,  # the same sequences every run: the suite is repeatable; "long" explores
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile(
    "ledger-long",
    max_examples=400,
    stateful_step_count=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
PROFILE = settings.get_profile("ledger-" + os.environ.get("LEDGER_PROFILE", "default"))

START = datetime(2026, 8, 20, 10, 0, tzinfo=UTC)  # the first payday (16 September) pays its sales
PARTNERS = 3
_transactions = itertools.count(1)
# Sale amounts: odd ones anywhere in range, and everyday ones that reach the minimum payout
# (Hypothesis draws small integers often; a ledger of 0.01 sales never pays anyone).
AMOUNTS = st.one_of(st.sampled_from([4_999, 12_900, 24_900, 59_999]), st.integers(1, 60_000))
ORDERS = st.lists(  # (partner, amount, days before now)
    st.tuples(st.integers(0, PARTNERS - 1), AMOUNTS, st.integers(0, 3)), min_size=1, max_size=4
)
REACHED: Counter[str] = Counter()  # what the run's sequences got to do, over every example


def event(name: str) -> None:
    REACHED[name] += 1


def _refund(conversion: Conversion, amount: int | None, refund_id: str | None) -> None:
    tracking.refund_conversion(conversion, amount, "refunded", refund_id=refund_id)


# Statements that change no row: reads, and the savepoints the services nest their writes in.
# Anything else (an INSERT, UPDATE, DELETE, a WITH that might hold one, a ROLLBACK TO) counts
# as a write, whether or not it touched a row (PostgreSQL's statement triggers run regardless).
_CHANGES_NOTHING = re.compile(r"\s*(SELECT|SAVEPOINT|RELEASE)\b", re.IGNORECASE)


class _Writes:
    """What the test's connection was sent since the invariant last ran: statements, writes."""

    def __init__(self) -> None:
        self.statements = self.writes = 0

    def __call__(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self.statements += 1
        if not _CHANGES_NOTHING.match(statement):
            self.writes += 1

    def books_unchanged(self) -> bool:
        """True only when statements were seen and none could write: a listener that saw
        nothing (detached, or a step served from the session alone) proves nothing."""
        return self.statements > 0 and self.writes == 0

    def reset(self) -> None:
        self.statements = self.writes = 0

    @classmethod
    @contextlib.contextmanager
    def watching(cls, connection: sa.Connection) -> Iterator[_Writes]:
        writes = cls()
        sa.event.listen(connection, "after_cursor_execute", writes)
        try:
            yield writes
        finally:
            sa.event.remove(connection, "after_cursor_execute", writes)


# The partners' confirmed lines in no payout, summed per partner: what the running balance
# must read (one query for all the partners, built once).
_UNPAID_BY_PARTNER = (
    sa.select(Commission.partner_id, sa.func.sum(Commission.amount_minor))
    .where(
        Commission.status == "confirmed",
        ~sa.exists().where(PayoutLine.commission_id == Commission.id),
    )
    .group_by(Commission.partner_id)
)


class LedgerMachine(RuleBasedStateMachine):
    traveller: time_machine.Coordinates  # set by the test before the machine runs
    writes: _Writes  # likewise

    def __init__(self):
        super().__init__()
        self.writes.reset()
        lookups.forget_everywhere()
        self.traveller.move_to(START)
        self.savepoint = _db.session.begin_nested()
        self.program = ProgramFactory(
            currency="USD",
            timezone="America/New_York",
            payout_schedule="monthly",
            payout_day=15,
            minimum_payout_minor=1500,
            hold_period_days=14,
            allow_withdrawals=True,
            commission_percent_bp=1000,
        )
        self.manager = UserFactory(role=Role.MANAGER)
        self.partners = [PartnerFactory() for _ in range(PARTNERS)]
        for partner in self.partners[:-1]:  # the last one never gives payout details: held back
            save_payout_account(
                partner,
                PayoutDetails(method="paypal", paypal_email=f"p{partner.id}@example.org"),
                partner.user,
            )
        self.tier = reward_rules.save_tier(
            self.program,
            self.manager,
            reward_rules.TierInput(
                name="Silver",
                rank=1,
                rate=reward_rules.RateInput("percent", 1250),
                threshold_metric="revenue",
                threshold_value=30_000,
                period="previous_month",
            ),
        )
        _db.session.add(LadderStep(threshold_conversions=3, bonus_minor=500))
        _db.session.flush()
        self.sales: list[tuple[int, tracking.ConversionInput, dict]] = []  # (conversion id, input, raw)
        self.refund_ids: list[tuple[int, str, int]] = []  # (conversion id, refund id, amount)

    def teardown(self):
        self.savepoint.rollback()
        _db.session.expunge_all()
        lookups.forget_everywhere()

    # --- helpers ---------------------------------------------------------------------------

    def _conversion(self, index: int) -> Conversion:
        return _db.session.get(Conversion, self.sales[index % len(self.sales)][0])

    def _lines(self) -> int:
        return _db.session.scalar(sa.select(sa.func.count()).select_from(Commission))

    def _items(self, status: str, batch_status: str = BatchStatus.APPROVED) -> list[PayoutItem]:
        return list(
            _db.session.scalars(
                sa.select(PayoutItem)
                .join(PayoutBatch, PayoutBatch.id == PayoutItem.batch_id)
                .where(PayoutItem.status == status, PayoutBatch.status == batch_status)
                .order_by(PayoutItem.id)
            )
        )

    def _note_after_payout(self, conversion: Conversion) -> None:
        if any(line.payout_item is not None for line in conversion.commissions):
            event("refund after payout (clawback)")

    def _today(self):
        return schedule.local_today(self.program, utcnow())

    # --- sales and refunds ---------------------------------------------------------------------

    @initialize(orders=ORDERS)
    def opening_sales(self, orders):
        """Every example starts with some sales, so that paydays have lines to pay."""
        self.new_sales(orders)

    @rule(orders=ORDERS)
    def new_sales(self, orders):
        """One to four sales (partner, amount, days before now): sales are most of what happens."""
        for partner, amount, days_ago in orders:
            tx = f"order-{next(_transactions)}"
            data = tracking.ConversionInput(
                tx,
                amount,
                "USD",
                ref=self.partners[partner].ref_code,
                customer_id=f"c-{tx}",
                occurred_at=utcnow() - timedelta(days=days_ago),
            )
            raw = {"transaction_id": tx, "amount": amount}
            conversion, created = tracking.record_conversion(self.program, data, raw)
            assert created
            self.sales.append((conversion.id, data, raw))

    @precondition(lambda self: self.sales)
    @rule(index=st.integers(0, 10_000))
    def replayed_sale(self, index):
        conversion_id, data, raw = self.sales[index % len(self.sales)]
        lines = self._lines()
        conversion, created = tracking.record_conversion(self.program, data, raw)
        assert not created and conversion.id == conversion_id
        assert self._lines() == lines

    @precondition(lambda self: self.sales)
    @rule(index=st.integers(0, 10_000), share=st.floats(0.01, 0.99), with_id=st.booleans())
    def partial_refund(self, index, share, with_id):
        conversion = self._conversion(index)
        remaining = conversion.amount_minor - conversion.refunded_minor
        if remaining < 2:
            return
        amount = max(1, min(remaining - 1, int(remaining * share)))
        refund_id = f"rf-{next(_transactions)}" if with_id else None
        self._note_after_payout(conversion)
        _refund(conversion, amount, refund_id)
        if refund_id is not None:
            self.refund_ids.append((conversion.id, refund_id, amount))

    @precondition(lambda self: self.refund_ids)
    @rule(index=st.integers(0, 10_000))
    def replayed_refund(self, index):
        conversion_id, refund_id, amount = self.refund_ids[index % len(self.refund_ids)]
        conversion = _db.session.get(Conversion, conversion_id)
        refunded, lines = conversion.refunded_minor, self._lines()
        _refund(conversion, amount, refund_id)
        assert (conversion.refunded_minor, self._lines()) == (refunded, lines)

    @precondition(lambda self: self.sales)
    @rule(index=st.integers(0, 10_000))
    def full_refund(self, index):
        conversion = self._conversion(index)
        self._note_after_payout(conversion)
        _refund(conversion, None, None)
        assert conversion.refunded_minor == conversion.amount_minor

    @precondition(lambda self: self.sales)
    @rule(index=st.integers(0, 10_000), reason=st.sampled_from(["fraud_risk", "duplicate", "test_order"]))
    def reject(self, index, reason):
        conversion = self._conversion(index)
        if conversion.status == ConversionStatus.REJECTED:
            return
        tracking.reject_conversion(conversion, self.manager, reason, None)

    # --- the clock and the jobs ---------------------------------------------------------------------

    @rule(days=st.integers(1, 20))
    def days_pass(self, days):
        self.traveller.shift(timedelta(days=days))
        payouts.confirm_due_commissions(utcnow())

    @rule()
    def a_month_passes(self):
        self.traveller.shift(timedelta(days=31))
        payouts.confirm_due_commissions(utcnow())
        report = rewards.close_due_month(self.program)
        if report is not None and report.bonus_lines:
            event("ladder bonus written")

    @rule(then=st.sampled_from(["review", "approve", "pay one", "fail one"]))
    def payday(self, then):
        """The clock moves to the day after the next payout date (the 15th); settlement runs; the
        operator leaves the batch for review, approves it, or approves it and pays or fails one item."""
        today = self._today()
        year, month = (
            (today.year, today.month) if today.day < 16 else divmod(today.year * 12 + today.month, 12)
        )
        if today.day >= 16:
            month += 1
        self.traveller.move_to(datetime(year, month, 16, 17, 0, tzinfo=UTC))
        batch, created = payouts.settle(self.program, now=utcnow(), actor=self.manager)
        if created:
            event("scheduled batch built")
            if then != "review":
                payouts.approve_batch(batch, self.manager)
            waiting = [item for item in batch.items if item.status == ItemStatus.PENDING]
            if waiting and then == "pay one":
                payouts.mark_item_paid(waiting[0], self.manager, f"PAY-{waiting[0].id}", self._today())
                event("item paid")
            elif waiting and then == "fail one":
                payouts.mark_item_failed(waiting[0], self.manager, "bounced")
                event("item failed")

    @rule()
    def settle(self):
        _batch, created = payouts.settle(self.program, now=utcnow(), actor=self.manager)
        if created:
            event("scheduled batch built")

    @rule(partner=st.integers(0, PARTNERS - 1))
    def withdraw(self, partner):
        # Refused below the minimum, without payout details, or (suspended) at all.
        with contextlib.suppress(DomainError):
            payouts.request_withdrawal(self.program, self.partners[partner])
            event("withdrawal")

    # --- operators ---------------------------------------------------------------------------

    @rule(index=st.integers(0, 10_000))
    def approve_batch(self, index):
        waiting = list(
            _db.session.scalars(sa.select(PayoutBatch).where(PayoutBatch.status == BatchStatus.REVIEW))
        )
        if waiting:
            payouts.approve_batch(waiting[index % len(waiting)], self.manager)

    def _payable(self) -> list[PayoutItem]:
        """Items waiting in approved batches; the operator approves the oldest batch first if none."""
        items = self._items(ItemStatus.PENDING)
        if not items:
            waiting = self._items(ItemStatus.PENDING, BatchStatus.REVIEW)
            if waiting:
                payouts.approve_batch(waiting[0].batch, self.manager)
                items = self._items(ItemStatus.PENDING)
        return items

    @rule(index=st.integers(0, 10_000))
    def mark_paid(self, index):
        items = self._payable()
        if items:
            item = items[index % len(items)]
            payouts.mark_item_paid(item, self.manager, f"PAY-{item.id}", self._today())
            event("item paid")

    @rule(index=st.integers(0, 10_000))
    def mark_failed(self, index):
        items = self._payable()
        if items:
            payouts.mark_item_failed(items[index % len(items)], self.manager, "bounced")
            event("item failed")

    @rule(index=st.integers(0, 10_000))
    def paid_twice_is_refused(self, index):
        items = self._items(ItemStatus.PAID, BatchStatus.CLOSED) + self._items(ItemStatus.PAID)
        if not items:
            return
        item = items[index % len(items)]
        for attempt in (
            lambda: payouts.mark_item_paid(item, self.manager, "AGAIN", self._today()),
            lambda: payouts.mark_item_failed(item, self.manager, "late bounce"),
        ):
            try:
                attempt()
            except DomainError:
                continue
            raise AssertionError(f"a paid item {item.id} was paid or failed again")

    @rule(percent_bp=st.sampled_from([0, 500, 1000, 1250, 2000, 3333]))
    def rate_edit(self, percent_bp):
        reward_rules.save_plan(
            self.program, self.manager, reward_rules.PlanInput(reward_rules.RateInput("percent", percent_bp))
        )

    @rule(percent_bp=st.sampled_from([800, 1250, 1500]), threshold=st.sampled_from([10_000, 30_000, 90_000]))
    def tier_edit(self, percent_bp, threshold):
        reward_rules.save_tier(
            self.program,
            self.manager,
            reward_rules.TierInput(
                name="Silver",
                rank=1,
                rate=reward_rules.RateInput("percent", percent_bp),
                threshold_metric="revenue",
                threshold_value=threshold,
                period="previous_month",
            ),
            self.tier,
        )

    @rule(partner=st.integers(0, PARTNERS - 1), into_tier=st.booleans())
    def tier_set_by_hand(self, partner, into_tier):
        partner = self.partners[partner]
        if partner.status == PartnerStatus.APPROVED:
            reward_rules.set_partner_tier(
                self.program, self.manager, partner, self.tier if into_tier else None, "x"
            )

    @rule(partner=st.integers(0, PARTNERS - 1))
    def suspend_or_reinstate(self, partner):
        partner = self.partners[partner]
        if partner.status == PartnerStatus.APPROVED:
            accounts.suspend_partner(partner, self.manager, "checking their traffic")
        else:
            accounts.reinstate_partner(partner, self.manager)

    # --- what holds ------------------------------------------------------------------------------

    @invariant()
    def the_ledger_holds(self):
        REACHED["steps checked"] += 1
        _db.session.flush()
        if self.writes.books_unchanged():
            REACHED["steps that wrote nothing (books as last checked)"] += 1
            return
        REACHED["ledger checks run"] += 1
        violations = check_ledger()
        assert violations == [], "\n".join(str(v) for v in violations)
        # The confirmed balance the pages read (one row of running totals) is the sum of the
        # partner's confirmed lines in no payout, as it was counted from the lines before.
        unpaid = dict(_db.session.execute(_UNPAID_BY_PARTNER).all())
        for partner in self.partners:
            assert payouts.confirmed_balance(partner.id) == unpaid.get(partner.id, 0)
        self.writes.reset()  # after the checks' own reads


# The harness pins both tests' clock at START from before their fixtures to after (marker
# ``own_clock``) and they move it themselves: a run with the clock pinned elsewhere (``make test``'s
# --clock run) would repeat them step for step, so it leaves them out.
@pytest.mark.own_clock(START)
def test_random_money_events_keep_the_ledger(db, database_backend):
    with (
        time_machine.travel(START, tick=False) as traveller,
        _Writes.watching(db.session.get_bind()) as writes,
    ):
        LedgerMachine.traveller, LedgerMachine.writes = traveller, writes
        REACHED.clear()
        run_state_machine_as_test(LedgerMachine, settings=PROFILE)
    print(f"\n{database_backend}: {dict(REACHED)}")  # what the sequences got to (with -s)
    assert REACHED["steps checked"] >= PROFILE.max_examples
    # Most steps change the books, so the checks really ran after most of them.
    assert REACHED["ledger checks run"] >= REACHED["steps checked"] // 2, dict(REACHED)


@pytest.mark.own_clock(START)
def test_a_scripted_sequence_reaches_every_money_event(db, database_backend):
    """The same rules in a fixed order that reaches everything the random run may miss: paid,
    failed and held items, a clawback after payment, a withdrawal, a ladder bonus, edits,
    suspension; the ledger is checked after every step as in the random run."""
    with (
        time_machine.travel(START, tick=False) as traveller,
        _Writes.watching(db.session.get_bind()) as writes,
    ):
        LedgerMachine.traveller, LedgerMachine.writes = traveller, writes
        REACHED.clear()
        machine = LedgerMachine()
        steps = [
            lambda: machine.new_sales([(0, 24_900, 0), (1, 12_900, 1), (2, 59_999, 0), (0, 4_999, 2)]),
            lambda: machine.new_sales([(1, 24_900, 0), (0, 12_900, 0)]),
            lambda: machine.replayed_sale(0),
            lambda: machine.partial_refund(1, 0.3, True),
            lambda: machine.replayed_refund(0) if machine.refund_ids else None,
            lambda: machine.reject(5, "fraud_risk"),
            lambda: machine.payday("pay one"),
            lambda: machine.mark_failed(0),
            lambda: machine.full_refund(0),  # its line was paid: a clawback
            lambda: machine.paid_twice_is_refused(0),
            lambda: machine.rate_edit(2000),
            lambda: machine.tier_edit(1500, 10_000),
            lambda: machine.tier_set_by_hand(1, True),
            lambda: machine.suspend_or_reinstate(1),
            lambda: machine.new_sales([(1, 24_900, 0), (0, 59_999, 0), (0, 12_900, 0), (0, 4_999, 0)]),
            lambda: machine.a_month_passes(),
            lambda: machine.suspend_or_reinstate(1),
            lambda: machine.withdraw(1),
            lambda: machine.days_pass(20),
            lambda: machine.payday("approve"),
            lambda: machine.mark_paid(0),
            lambda: machine.settle(),
        ]
        try:
            machine.the_ledger_holds()
            for step in steps:
                step()
                machine.the_ledger_holds()
        finally:
            machine.teardown()
    reached = {name for name, count in REACHED.items() if count}
    assert {
        "scheduled batch built",
        "item paid",
        "item failed",
        "refund after payout (clawback)",
        "withdrawal",
        "ladder bonus written",
    } <= reached, dict(REACHED)

"""Settlement against refunds and rejections that arrive between the cut-off and the build."""

from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
import time_machine

from portal.models import Commission, PayoutLine, RejectionReason, Role
from portal.services import payouts, tracking
from portal.services.ledger import check_ledger
from portal.services.payouts import PayoutDetails, save_payout_account, settle
from tests.factories import PartnerFactory, UserFactory, earn
from tests.unit.test_payouts import program  # noqa: F401 - the monthly USD program in UTC, paying from 50.00

# Money tests: `make test` runs them again with the clock pinned (marker ``money``).
pytestmark = [pytest.mark.postgres, pytest.mark.money]

AS_OF = date(2026, 11, 20)  # payout day 15 → settles the 15 Nov 2026 period
CUTOFF = datetime(2026, 11, 15, tzinfo=UTC)  # the program keeps its books in UTC


def _paypal(partner):
    save_payout_account(
        partner, PayoutDetails(method="paypal", paypal_email=f"pay{partner.id}@example.org"), partner.user
    )


def _payout_of(db, line):
    return db.session.scalar(sa.select(PayoutLine.payout_item_id).where(PayoutLine.commission_id == line.id))


@pytest.mark.parametrize("how", ["refund", "reject"])
def test_a_sale_taken_back_after_the_cutoff_but_before_the_batch_is_not_paid(db, program, how):  # noqa: F811 - the fixture
    """The refund (or rejection) is known when the batch is built: the batch must not pay the
    commission of that sale and leave the partner owing it back."""
    partner = PartnerFactory()
    _paypal(partner)
    kept = earn(partner, 6000, at=CUTOFF - timedelta(days=5))
    refunded = earn(partner, 6000, at=CUTOFF - timedelta(days=4))
    manager = UserFactory(role=Role.MANAGER)
    # The cron runs a few hours into the payout day; the refund came in at 02:00 that day.
    with time_machine.travel(CUTOFF + timedelta(hours=2), tick=False):
        if how == "refund":
            tracking.refund_conversion(refunded.conversion, None, "returned")
        else:
            tracking.reject_conversion(refunded.conversion, manager, RejectionReason.FRAUD_RISK, None)
    with time_machine.travel(CUTOFF + timedelta(hours=6), tick=False):
        batch, created = settle(program, AS_OF)

    reversal = db.session.scalars(sa.select(Commission).where(Commission.reverses_id == refunded.id)).one()
    assert reversal.amount_minor == -6000
    assert created
    # What is paid is what the partner is owed now: the kept sale's commission only.
    assert [item.amount_minor for item in batch.items] == [6000]
    assert _payout_of(db, kept) == batch.items[0].id
    # The refunded sale and its reversal are settled together (in the batch or both out of it),
    # never the sale paid and its reversal left behind as a debt.
    assert _payout_of(db, refunded) == _payout_of(db, reversal)
    assert payouts.confirmed_balance(partner.id) == 0
    # The factory's lines carry no rule explanation (line_rule): everything else must hold.
    assert check_ledger(skip=("line_rule",)) == []


def test_a_refund_after_the_cutoff_of_the_only_sale_leaves_nobody_to_pay(db, program):  # noqa: F811 - the fixture
    partner = PartnerFactory()
    _paypal(partner)
    line = earn(partner, 8000, at=CUTOFF - timedelta(days=5))
    with time_machine.travel(CUTOFF + timedelta(hours=1), tick=False):
        tracking.refund_conversion(line.conversion, None, "returned")
    with time_machine.travel(CUTOFF + timedelta(hours=3), tick=False):
        batch, created = settle(program, AS_OF)
    assert (batch, created) == (None, False)
    assert payouts.confirmed_balance(partner.id) == 0

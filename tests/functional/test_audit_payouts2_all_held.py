"""A batch whose every payment is held: approving it leaves nothing to pay, so it closes at
once (the held balances carry over) instead of showing as overdue for ever."""

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from portal.models import BatchStatus, PayoutBatch, Role
from portal.services import payouts
from tests.factories import PartnerFactory, earn

# Money tests: `make test` runs them again with the clock pinned (marker ``money``).
pytestmark = [pytest.mark.postgres, pytest.mark.money]


def test_an_all_held_batch_says_so_and_closes_when_approved(client, db, program, login_as):
    program.minimum_payout_minor = 1000
    program.payout_day = 1
    partner = PartnerFactory(ref_code="nodetails")  # no payout details: held
    earn(partner, 2500, at=datetime(2026, 9, 1, tzinfo=UTC))
    db.session.commit()
    login_as(Role.MANAGER)
    client.post("/admin/payouts/settle")
    batch = db.session.scalars(sa.select(PayoutBatch)).one()
    page = client.get(f"/admin/payouts/{batch.id}").get_data(as_text=True)
    assert "Nothing to pay in this batch" in page

    answer = client.post(f"/admin/payouts/{batch.id}/approve", follow_redirects=True)
    page = answer.get_data(as_text=True)
    db.session.expire_all()
    batch = db.session.get(PayoutBatch, batch.id)
    assert batch.status == BatchStatus.CLOSED and batch.closed_at is not None
    assert payouts.overdue_days(batch, datetime(2027, 6, 1, tzinfo=UTC).date()) == 0
    assert "closed" in page and 'data-testid="batch-overdue"' not in page
    assert "nothing in it to pay" in page
    # The held balance was never in the batch: it is the partner's, for the next payout.
    assert payouts.confirmed_balance(partner.id) == 2500
    assert payouts.hold_of(partner) is None
    listing = client.get("/admin/payouts").get_data(as_text=True)
    assert 'data-testid="batch-overdue"' not in listing

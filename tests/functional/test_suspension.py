"""Pages under suspension and the one line status: a suspended partner is told why and
refused; a paid line reads "paid" with its payout step on both conversion pages; the
dashboard's terms name the rate that applies."""

from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa
import time_machine

from portal.models import (
    Link,
    PartnerStatus,
    PartnerTier,
    PayoutAccount,
    PayoutBatch,
    PayoutLine,
    Role,
    Tier,
)
from portal.services import accounts
from portal.services.payouts import PayoutDetails, save_payout_account
from tests.factories import PartnerFactory, PayoutItemFactory, UserFactory, earn

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


@pytest.fixture(autouse=True)
def clock():
    """Every date on these pages is read at one pinned instant (sign-in included)."""
    with time_machine.travel(NOW, tick=False):
        yield


def _sign_in(client, user):
    with client.session_transaction() as session:
        session["_user_id"] = user.get_id()
        session["_fresh"] = True


def _suspended_partner(db, program):
    program.allow_withdrawals = True
    program.minimum_payout_minor = 1000
    partner = PartnerFactory()
    save_payout_account(
        partner, PayoutDetails(method="paypal", paypal_email="before@example.org"), partner.user
    )
    earn(partner, 6000, at=datetime(2026, 10, 1, tzinfo=UTC))
    accounts.suspend_partner(partner, UserFactory(role=Role.MANAGER), "chargebacks")
    db.session.commit()
    return partner


def test_a_suspended_partner_is_told_why_and_every_post_is_refused(client, db, program):
    partner = _suspended_partner(db, program)
    _sign_in(client, partner.user)
    with time_machine.travel(NOW, tick=False):
        earnings = client.get("/partner/earnings").get_data(as_text=True)
        assert 'data-testid="suspended-notice"' in earnings
        assert "Your account is suspended" in earnings
        assert "/partner/earnings/withdraw" not in earnings  # no button
        assert "Change payout details" not in earnings

        withdrawn = client.post("/partner/earnings/withdraw", follow_redirects=True)
        assert "so no payout can be requested" in withdrawn.get_data(as_text=True)
        assert db.session.scalar(sa.select(sa.func.count()).select_from(PayoutBatch)) == 0

        details_page = client.get("/partner/payout-details").get_data(as_text=True)
        assert 'data-testid="suspended-notice"' in details_page and "Save payout details" not in details_page
        details = client.post(
            "/partner/payout-details", data={"method": "paypal", "paypal_email": "thief@example.org"}
        )
        assert details.status_code == 422
        assert "cannot be changed until it is reinstated" in details.get_data(as_text=True)
        assert db.session.scalar(sa.select(PayoutAccount.paypal_email)) == "before@example.org"

        links_page = client.get("/partner/links").get_data(as_text=True)
        assert 'data-testid="suspended-notice"' in links_page and "Make the link</button>" not in links_page
        made = client.post("/partner/links", data={"label": "Spring", "channel": "seo"})
        assert made.status_code == 422
        assert "no new link can be made" in made.get_data(as_text=True)
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Link)) == 0


def test_the_batch_and_earnings_pages_say_why_an_item_is_held(client, db, program, login_as):
    program.payout_day = 15
    partner = _suspended_partner(db, program)
    login_as(Role.MANAGER)
    with time_machine.travel(NOW, tick=False):
        client.post("/admin/payouts/settle")
        batch = db.session.scalars(sa.select(PayoutBatch)).one()
        page = client.get(f"/admin/payouts/{batch.id}").get_data(as_text=True)
        assert "partner suspended; released when the partner is reinstated." in page
        _sign_in(client, partner.user)
        earnings = client.get("/partner/earnings").get_data(as_text=True)
        assert 'data-testid="held-items"' in earnings
        assert "your account is suspended; it is paid once the account is reinstated." in earnings
        assert 'data-status="held"' in earnings  # the ledger line: a word and an icon


def _paid_line(db, partner):
    line = earn(partner, 1200, at=datetime(2026, 9, 1, tzinfo=UTC))
    item = PayoutItemFactory(
        batch__kind="withdrawal", batch__status="closed", batch__period_end=date(2026, 10, 15),
        batch__cutoff_at=NOW, partner=partner, amount_minor=1200, status="paid",
        reference="BATCH-5-REF", paid_on=date(2026, 10, 16), method="paypal",
    )  # fmt: skip
    db.session.add(PayoutLine(commission_id=line.id, payout_item_id=item.id))
    db.session.commit()
    return line


def test_a_paid_line_reads_paid_with_its_payout_step_on_both_conversion_pages(client, db, program, login_as):
    partner = PartnerFactory()
    line = _paid_line(db, partner)
    _sign_in(client, partner.user)
    mine = client.get(f"/partner/conversions/{line.conversion_id}").get_data(as_text=True)
    for page in (mine,):
        assert "counted — commission pending" not in page
        assert 'data-testid="payout-step"' in page
        assert "BATCH-5-REF" in page
        assert 'data-status="paid"' in page and 'data-status="confirmed"' not in page
    assert "Oct 16, 2026" in mine and "Oct 15, 2026" in mine

    login_as(Role.MANAGER)
    theirs = client.get(f"/admin/conversions/{line.conversion_id}").get_data(as_text=True)
    assert 'data-testid="payout-step"' in theirs and "BATCH-5-REF" in theirs
    assert 'data-status="paid"' in theirs and 'data-status="confirmed"' not in theirs
    assert "counted — commission pending" not in theirs


def test_the_dashboard_terms_show_the_tier_rate_and_why(client, db, program):
    program.commission_type, program.commission_percent_bp = "percent", 1000
    partner = PartnerFactory()
    gold = Tier(
        name="Gold", rank=1, rate_type="percent", rate_percent_bp=1200, rate_flat_minor=0,
        threshold_metric="conversions", threshold_value=3, period="rolling_30",
    )  # fmt: skip
    db.session.add(gold)
    db.session.flush()
    db.session.add(
        PartnerTier(partner_id=partner.id, tier_id=gold.id, since=datetime(2026, 1, 1, tzinfo=UTC))
    )
    db.session.commit()
    _sign_in(client, partner.user)
    with time_machine.travel(NOW, tick=False):
        page = client.get("/partner/").get_data(as_text=True)
    terms = page[page.index('data-testid="your-rate"') :]
    terms = terms[: terms.index("</p>")]
    assert "12%" in terms and "Gold tier" in terms
    assert "10%" not in terms


def test_the_dashboard_terms_of_a_partner_on_the_base_rate(client, db, program):
    program.commission_type, program.commission_percent_bp = "percent", 1000
    partner = PartnerFactory(status=PartnerStatus.APPROVED)
    db.session.commit()
    _sign_in(client, partner.user)
    with time_machine.travel(NOW, tick=False):
        page = client.get("/partner/").get_data(as_text=True)
    terms = page[page.index('data-testid="your-rate"') :]
    assert "10%" in terms[: terms.index("</p>")] and "base rate" in terms[: terms.index("</p>")]

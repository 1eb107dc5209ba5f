"""The partner's Rewards page: tier, progress in words, the month's ladder, open campaigns
with their end dates on the program's clock, private deals — only the partner's own."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from portal.models import (
    Campaign,
    CampaignAudience,
    Conversion,
    LadderStep,
    PartnerTier,
    PrivateDeal,
    Role,
    Tier,
)
from tests.factories import PartnerFactory

NOW = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)  # program time zone: Europe/Berlin
_orders = itertools.count(1)


def sale(partner, amount_minor: int, at: datetime = NOW - timedelta(days=1)) -> Conversion:
    return Conversion(
        transaction_id=f"reward-page-{next(_orders)}",
        amount_minor=amount_minor,
        currency="USD",
        partner_id=partner.id,
        request_fingerprint="x",
        occurred_at=at,
    )


@pytest.fixture
def travel():
    with time_machine.travel(NOW, tick=False):
        yield


def test_tier_progress_ladder_campaigns_and_deals_in_words(client, db, program, login_as, travel):
    user = login_as(Role.PARTNER)
    partner, other = user.partner, PartnerFactory()
    silver = Tier(
        name="Silver", rank=1, rate_percent_bp=1200, threshold_metric="revenue", threshold_value=50_000
    )
    gold = Tier(
        name="Gold", rank=2, rate_percent_bp=1500, threshold_metric="revenue", threshold_value=200_000
    )
    db.session.add_all([silver, gold, LadderStep(threshold_conversions=3, bonus_minor=5000)])
    db.session.add(LadderStep(threshold_conversions=10, bonus_minor=15000))
    db.session.flush()
    db.session.add(PartnerTier(partner_id=partner.id, tier_id=silver.id))
    # 3 sales this month worth 1,200.00; one last month that does not count for the month.
    db.session.add_all([sale(partner, 40_000) for _ in range(3)])
    db.session.add(sale(partner, 99_000, at=datetime(2026, 11, 20, tzinfo=UTC)))
    everyone = Campaign(
        name="Winter sale",
        starts_at=NOW - timedelta(days=2),
        ends_at=datetime(2026, 12, 31, 23, 0, tzinfo=UTC),  # midnight in Berlin
        rate_percent_bp=2000,
    )
    theirs = Campaign(
        name="Someone else's deal",
        starts_at=NOW - timedelta(days=2),
        ends_at=NOW + timedelta(days=30),
        rate_percent_bp=3000,
        audience=CampaignAudience.PARTNERS,
    )
    theirs.partners = [other]
    over = Campaign(
        name="Autumn (over)", starts_at=NOW - timedelta(days=60), ends_at=NOW - timedelta(days=30)
    )
    mine = PrivateDeal(
        partner_id=partner.id,
        rate_percent_bp=1750,
        product_ids=["tent-2p"],
        ends_at=datetime(2027, 3, 31, 22, 0, tzinfo=UTC),
    )
    not_mine = PrivateDeal(partner_id=other.id, rate_percent_bp=4000, note="other partner's")
    db.session.add_all([everyone, theirs, over, mine, not_mine])
    db.session.commit()

    page = client.get("/partner/rewards").get_data(as_text=True)
    assert "Silver" in page and "You earn 12% of each sale." in page
    assert (
        "$1,200.00 of the $2,000.00 this month so far that Gold needs: $800.00 to go. "
        "Gold pays 15% of each sale, from the sale that crosses the line."
    ) in page
    assert 'id="tier-progress" max="100" value="60"' in page
    assert "3 sales counted this month." in page
    assert "You have reached the 3-sale step: $50.00 when the month closes." in page
    assert "7 more for the 10-sale step ($150.00)." in page
    assert "Winter sale" in page and "20% of each sale, on every product." in page
    assert "ends Jan 1, 2027, 12:00:00\u202fAM" in page  # on the program's clock (Berlin)
    assert "Someone else" not in page and "Autumn (over)" not in page
    assert "17.5% of each sale" in page and "on tent-2p" in page
    assert "until Apr 1, 2027, 12:00:00\u202fAM (Europe/Berlin)" in page  # summer time by then
    assert "other partner" not in page and "40% of each sale" not in page


def test_a_partner_without_tier_or_ladder_reads_the_base_rate(client, db, program, login_as, travel):
    login_as(Role.PARTNER)
    page = client.get("/partner/rewards").get_data(as_text=True)
    assert "No tier yet" in page and "You earn the base rate: 10% of each sale." in page
    assert "The program has no tiers yet." in page
    assert "The program has no monthly volume bonus at the moment." in page
    assert "No campaigns are open to you right now." in page and "No private deals." in page


def test_the_highest_tier_says_so(client, db, program, login_as, travel):
    user = login_as(Role.PARTNER)
    gold = Tier(name="Gold", rank=1, rate_percent_bp=1500, threshold_value=1)
    db.session.add(gold)
    db.session.flush()
    db.session.add(PartnerTier(partner_id=user.partner.id, tier_id=gold.id))
    db.session.commit()
    page = client.get("/partner/rewards").get_data(as_text=True)
    assert "This is the highest tier." in page and '<progress id="tier-progress"' not in page


def test_the_rewards_page_is_in_the_partner_menu(client, db, program, login_as):
    login_as(Role.PARTNER)
    page = client.get("/partner/").get_data(as_text=True)
    assert 'href="/partner/rewards"' in page

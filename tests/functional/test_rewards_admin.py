"""The rewards console: each form saves what it should, and every bad input is refused with nothing saved."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import time_machine

from portal.models import (
    AuditEvent,
    Campaign,
    LadderStep,
    Link,
    PrivateDeal,
    ProductRate,
    Role,
    Tag,
    Tier,
)
from portal.models.types import utcnow
from tests.factories import PartnerFactory


def count(db, model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def audit_actions(db) -> list[str]:
    return list(db.session.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.id)))


@pytest.fixture
def manager(login_as):
    return login_as(Role.MANAGER)


def test_console_writes_the_precedence_down(client, db, program, manager):
    page = client.get("/admin/rewards").get_data(as_text=True)
    order = [
        page.index(label)
        for label in ("Private deal", "Campaign rate", "Product rate", "Tier rate", "Base rate")
    ]
    assert order == sorted(order)
    assert "Bonuses stack on top" in page


def test_plan_saves_base_rate_and_renewals_and_is_audited(client, db, program, manager):
    response = client.post(
        "/admin/rewards/plan",
        data={
            "rate_type": "percent",
            "rate_percent": "12.5",
            "rate_flat": "",
            "recurring_mode": "months",
            "recurring_months": "12",
            "top_partner_tag": "Top Partner",
        },
    )
    assert response.status_code == 302
    db.session.refresh(program)
    assert (program.commission_percent_bp, program.recurring_mode, program.recurring_months) == (
        1250,
        "months",
        12,
    )
    assert program.top_partner_tag == "top partner"
    assert "rewards.plan_changed" in audit_actions(db)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rate_type": "percent", "rate_percent": "100.01"}, "A rate cannot be over 100 %."),
        ({"rate_type": "percent", "rate_percent": "ten"}, "Enter a percent such as 12.5"),
        ({"rate_type": "flat", "rate_flat": "-1"}, "The amount cannot be negative."),
        (
            {"rate_type": "percent", "rate_percent": "10", "recurring_mode": "months"},
            "Enter the number of months.",
        ),
    ],
)
def test_plan_refuses_bad_input_and_saves_nothing(client, db, program, manager, data, message):
    before = (program.commission_type, program.commission_percent_bp, program.recurring_mode)
    response = client.post("/admin/rewards/plan", data={"recurring_mode": "forever", **data})
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    db.session.refresh(program)
    assert (program.commission_type, program.commission_percent_bp, program.recurring_mode) == before
    assert "rewards.plan_changed" not in audit_actions(db)


def test_product_rates(client, db, program, manager):
    ok = client.post(
        "/admin/rewards/products", data={"product_id": "pro", "rate_type": "flat", "rate_flat": "7.50"}
    )
    assert ok.status_code == 302
    rate = db.session.scalars(sa.select(ProductRate)).one()
    assert (rate.rate_type, rate.rate_flat_minor) == ("flat", 750)
    again = client.post(
        "/admin/rewards/products", data={"product_id": "pro", "rate_type": "percent", "rate_percent": "5"}
    )
    assert again.status_code == 422
    assert "already has its own rate" in again.get_data(as_text=True)
    over = client.post(
        "/admin/rewards/products", data={"product_id": "max", "rate_type": "percent", "rate_percent": "150"}
    )
    assert over.status_code == 422 and "A rate cannot be over 100 %." in over.get_data(as_text=True)
    assert 'value="max"' in over.get_data(as_text=True)  # what was typed stays
    assert count(db, ProductRate) == 1
    edited = client.post(
        f"/admin/rewards/products/{rate.id}",
        data={"product_id": "pro", "rate_type": "percent", "rate_percent": "20"},
    )
    assert edited.status_code == 302
    db.session.refresh(rate)
    assert (rate.rate_type, rate.rate_percent_bp) == ("percent", 2000)
    assert client.post(f"/admin/rewards/products/{rate.id}/delete").status_code == 302
    assert count(db, ProductRate) == 0


def tier_data(**kw) -> dict:
    return {
        "name": "Silver",
        "rank": "2",
        "rate_type": "percent",
        "rate_percent": "12",
        "threshold_metric": "revenue",
        "threshold": "1000.00",
        "period": "previous_month",
        **kw,
    }


def test_tiers_crud_and_threshold_order(client, db, program, manager):
    assert (
        client.post(
            "/admin/rewards/tiers/new", data=tier_data(name="Bronze", rank="1", threshold="100.00")
        ).status_code
        == 302
    )
    assert client.post("/admin/rewards/tiers/new", data=tier_data()).status_code == 302
    assert (
        client.post(
            "/admin/rewards/tiers/new",
            data=tier_data(name="Gold", rank="3", threshold="5000", can_request_campaigns="y"),
        ).status_code
        == 302
    )
    gold = db.session.scalar(sa.select(Tier).where(Tier.name == "Gold"))
    assert (gold.threshold_value, gold.can_request_campaigns) == (500_000, True)
    page = client.get("/admin/rewards/tiers").get_data(as_text=True)
    assert "Bronze" in page and "may ask for campaign links" in page

    # A tier between Silver and Gold that needs less than Silver.
    below = client.post(
        "/admin/rewards/tiers/new", data=tier_data(name="Platinum", rank="4", threshold="4000")
    )
    assert below.status_code == 422
    assert "must need more than Gold, the tier below it" in below.get_data(as_text=True)
    assert count(db, Tier) == 3
    # Editing Silver up past Gold is refused too.
    silver = db.session.scalar(sa.select(Tier).where(Tier.name == "Silver"))
    over = client.post(f"/admin/rewards/tiers/{silver.id}", data=tier_data(threshold="6000"))
    assert over.status_code == 422
    assert "must need less than Gold, the tier above it" in over.get_data(as_text=True)
    db.session.refresh(silver)
    assert silver.threshold_value == 100_000
    # Over 100 %, a taken level, a taken name.
    assert "A rate cannot be over 100 %." in client.post(
        "/admin/rewards/tiers/new", data=tier_data(name="X", rank="9", threshold="9000", rate_percent="101")
    ).get_data(as_text=True)
    assert "already has level 2" in client.post(
        "/admin/rewards/tiers/new", data=tier_data(name="X", threshold="1500")
    ).get_data(as_text=True)
    assert "already a tier called Gold" in client.post(
        "/admin/rewards/tiers/new", data=tier_data(name="gold", rank="7", threshold="9000")
    ).get_data(as_text=True)
    assert count(db, Tier) == 3
    assert client.post(f"/admin/rewards/tiers/{gold.id}/delete").status_code == 302
    assert count(db, Tier) == 2
    assert "rewards.tier_deleted" in audit_actions(db)


def local(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M")


def campaign_data(**kw) -> dict:
    start = datetime(2030, 6, 1, 9, 0)
    return {
        "name": "Summer",
        "starts_at": local(start),
        "ends_at": local(start + timedelta(days=10)),
        "products": "",
        "reward": "rate",
        "rate_type": "percent",
        "rate_percent": "25",
        "audience": "everyone",
        **kw,
    }


def test_campaign_is_saved_in_the_program_time_zone_and_gets_links(client, db, program, manager):
    response = client.post(
        "/admin/rewards/campaigns/new", data=campaign_data(landing_url="https://shop.example/summer")
    )
    assert response.status_code == 302
    campaign = db.session.scalars(sa.select(Campaign)).one()
    # The factory's program is in Europe/Berlin: 09:00 CEST is 07:00 UTC.
    assert campaign.starts_at == datetime(2030, 6, 1, 7, 0, tzinfo=UTC)
    assert campaign.rate_percent_bp == 2500
    page = client.get(f"/admin/rewards/campaigns/{campaign.id}").get_data(as_text=True)
    assert 'value="2030-06-01T09:00"' in page

    partner = PartnerFactory()
    linked = client.post(
        f"/admin/rewards/campaigns/{campaign.id}/links",
        data={"partner": partner.ref_code, "label": "Summer link", "channel": "social"},
    )
    assert linked.status_code == 302
    link = db.session.scalars(sa.select(Link).where(Link.campaign_id == campaign.id)).one()
    assert (link.partner_id, link.destination_url) == (partner.id, "https://shop.example/summer")
    unknown = client.post(
        f"/admin/rewards/campaigns/{campaign.id}/links", data={"partner": "nobody", "channel": "social"}
    )
    assert unknown.status_code == 422 and "No approved partner" in unknown.get_data(as_text=True)
    assert "rewards.campaign_link_created" in audit_actions(db)


def test_a_new_landing_page_moves_the_campaigns_links_and_their_redirects(client, db, program, manager):
    client.post("/admin/rewards/campaigns/new", data=campaign_data(landing_url="https://shop.example/summer"))
    campaign = db.session.scalars(sa.select(Campaign)).one()
    partner = PartnerFactory()
    client.post(
        f"/admin/rewards/campaigns/{campaign.id}/links",
        data={"partner": partner.ref_code, "channel": "social"},
    )
    link = db.session.scalars(sa.select(Link).where(Link.campaign_id == campaign.id)).one()
    first = client.get(f"/go/{link.code}")
    assert first.status_code == 302 and first.headers["Location"].startswith("https://shop.example/summer")

    saved = client.post(
        f"/admin/rewards/campaigns/{campaign.id}",
        data=campaign_data(landing_url="https://shop.example/autumn"),
    )
    assert saved.status_code == 302, saved.get_data(as_text=True)
    db.session.refresh(link)
    assert link.destination_url == "https://shop.example/autumn"
    moved = client.get(f"/go/{link.code}")
    assert moved.status_code == 302 and moved.headers["Location"].startswith("https://shop.example/autumn")


def test_private_campaign_links_only_for_its_partners(client, db, program, manager):
    mine, other = PartnerFactory(), PartnerFactory()
    assert (
        client.post(
            "/admin/rewards/campaigns/new", data=campaign_data(audience="partners", partners=mine.ref_code)
        ).status_code
        == 302
    )
    campaign = db.session.scalars(sa.select(Campaign)).one()
    assert [p.id for p in campaign.partners] == [mine.id]
    refused = client.post(
        f"/admin/rewards/campaigns/{campaign.id}/links", data={"partner": other.ref_code, "channel": "seo"}
    )
    assert refused.status_code == 422
    assert "not open to" in refused.get_data(as_text=True)
    assert count(db, Link) == 0


@pytest.mark.parametrize(
    ("data", "field_message"),
    [
        ({"ends_at": "2030-06-01T08:59"}, "The campaign must end after it starts."),
        ({"ends_at": "2030-06-01T09:00"}, "The campaign must end after it starts."),
        ({"rate_percent": "100.5"}, "A rate cannot be over 100 %."),
        ({"landing_url": "https://evil.example/summer"}, "allowed domains: shop.example"),
        ({"landing_url": "javascript:alert(1)"}, "allowed domains"),
        ({"audience": "tiers"}, "Choose at least one tier."),
        ({"audience": "tag", "tag": "nobody-has-it"}, "No partner has the tag"),
        ({"audience": "partners", "partners": "ghost@example.org"}, "No approved partner"),
        ({"reward": "bonus", "bonus": ""}, "Enter an amount"),
        ({"reward": "bonus", "bonus": "0"}, "Enter the bonus per conversion, more than zero."),
        ({"name": ""}, "Name the campaign."),
        ({"starts_at": ""}, "Enter when the campaign starts."),
    ],
)
def test_campaign_bad_input_is_refused_and_nothing_saved(client, db, program, manager, data, field_message):
    response = client.post("/admin/rewards/campaigns/new", data=campaign_data(**data))
    assert response.status_code == 422
    body = response.get_data(as_text=True)
    assert field_message in body
    assert 'class="error"' in body  # beside its field
    assert count(db, Campaign) == 0
    assert "rewards.campaign_saved" not in audit_actions(db)


def test_overlapping_campaigns_are_refused(client, db, program, manager):
    db.session.add(Tag(name="vip"))
    db.session.commit()
    assert (
        client.post("/admin/rewards/campaigns/new", data=campaign_data(products="tent, stove")).status_code
        == 302
    )
    # Same audience, a shared product, overlapping dates.
    clash = client.post(
        "/admin/rewards/campaigns/new",
        data=campaign_data(
            name="Tents", products="tent", starts_at="2030-06-10T08:00", ends_at="2030-06-20T08:00"
        ),
    )
    assert clash.status_code == 422
    assert "This overlaps “Summer”" in clash.get_data(as_text=True)
    # An all-products campaign overlaps every product.
    assert client.post("/admin/rewards/campaigns/new", data=campaign_data(name="All")).status_code == 422
    assert count(db, Campaign) == 1
    # Other products, other dates or another audience are fine.
    assert (
        client.post(
            "/admin/rewards/campaigns/new", data=campaign_data(name="Boots", products="boots")
        ).status_code
        == 302
    )
    assert (
        client.post(
            "/admin/rewards/campaigns/new",
            data=campaign_data(name="Later", starts_at="2030-06-11T09:00", ends_at="2030-06-12T09:00"),
        ).status_code
        == 302
    )
    assert (
        client.post(
            "/admin/rewards/campaigns/new", data=campaign_data(name="VIP", audience="tag", tag="vip")
        ).status_code
        == 302
    )
    # Back to back (one ends as the other starts) does not overlap.
    assert (
        client.post(
            "/admin/rewards/campaigns/new",
            data=campaign_data(name="Before", starts_at="2030-05-20T09:00", ends_at="2030-06-01T09:00"),
        ).status_code
        == 302
    )
    # Editing a campaign does not clash with itself.
    summer = db.session.scalar(sa.select(Campaign).where(Campaign.name == "Summer"))
    edited = client.post(
        f"/admin/rewards/campaigns/{summer.id}", data=campaign_data(products="tent, stove", rate_percent="30")
    )
    assert edited.status_code == 302
    db.session.refresh(summer)
    assert summer.rate_percent_bp == 3000


def test_campaign_end_and_delete(client, db, program, manager):
    now = utcnow()
    running = Campaign(name="Now", starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=1))
    later = Campaign(name="Later", starts_at=now + timedelta(days=5), ends_at=now + timedelta(days=6))
    db.session.add_all([running, later])
    db.session.commit()
    client.post(f"/admin/rewards/campaigns/{running.id}/delete")
    assert db.session.get(Campaign, running.id) is not None  # started: only ending it is allowed
    client.post(f"/admin/rewards/campaigns/{running.id}/end")
    db.session.refresh(running)
    assert running.ends_at <= utcnow()
    client.post(f"/admin/rewards/campaigns/{later.id}/delete")
    assert db.session.get(Campaign, later.id) is None


def test_ladder_steps(client, db, program, manager):
    assert (
        client.post(
            "/admin/rewards/ladder", data={"threshold_conversions": "10", "bonus": "50.00"}
        ).status_code
        == 302
    )
    assert (
        client.post(
            "/admin/rewards/ladder", data={"threshold_conversions": "25", "bonus": "150.00"}
        ).status_code
        == 302
    )
    for data, message in [
        ({"threshold_conversions": "10", "bonus": "60.00"}, "already a step at 10 conversions"),
        ({"threshold_conversions": "30", "bonus": "100.00"}, "must pay more than the step below it"),
        ({"threshold_conversions": "5", "bonus": "70.00"}, "must pay less than the step above it"),
        ({"threshold_conversions": "0", "bonus": "10.00"}, "Number must be"),
        ({"threshold_conversions": "40", "bonus": "-3"}, "The amount cannot be negative."),
    ]:
        response = client.post("/admin/rewards/ladder", data=data)
        assert response.status_code == 422, data
        assert message in response.get_data(as_text=True), data
    steps = db.session.scalars(sa.select(LadderStep).order_by(LadderStep.threshold_conversions)).all()
    assert [(s.threshold_conversions, s.bonus_minor) for s in steps] == [(10, 5000), (25, 15000)]
    assert client.post(f"/admin/rewards/ladder/{steps[0].id}/delete").status_code == 302
    assert count(db, LadderStep) == 1


def test_private_deals(client, db, program, manager):
    partner = PartnerFactory()
    response = client.post(
        "/admin/rewards/deals/new",
        data={
            "partner": partner.user.email,
            "rate_type": "percent",
            "rate_percent": "30",
            "products": "tent",
            "starts_on": "2030-01-01",
            "ends_on": "2030-01-31",
        },
    )
    assert response.status_code == 302
    deal = db.session.scalars(sa.select(PrivateDeal)).one()
    # Whole days in Berlin: from midnight on 1 January to midnight after 31 January.
    assert deal.starts_at == datetime(2029, 12, 31, 23, 0, tzinfo=UTC)
    assert deal.ends_at == datetime(2030, 1, 31, 23, 0, tzinfo=UTC)
    page = client.get(f"/admin/rewards/deals/{deal.id}").get_data(as_text=True)
    assert 'value="2030-01-31"' in page
    for data, message in [
        ({"partner": "nobody", "rate_type": "percent", "rate_percent": "10"}, "No approved partner"),
        (
            {"partner": partner.ref_code, "rate_type": "percent", "rate_percent": "120"},
            "A rate cannot be over 100 %.",
        ),
        (
            {
                "partner": partner.ref_code,
                "rate_type": "flat",
                "rate_flat": "5",
                "starts_on": "2030-02-02",
                "ends_on": "2030-02-01",
            },
            "must end on or after the day it starts",
        ),
    ]:
        refused = client.post("/admin/rewards/deals/new", data=data)
        assert refused.status_code == 422
        assert message in refused.get_data(as_text=True)
    assert count(db, PrivateDeal) == 1
    assert client.post(f"/admin/rewards/deals/{deal.id}/delete").status_code == 302
    assert count(db, PrivateDeal) == 0
    assert {"rewards.deal_saved", "rewards.deal_deleted"} <= set(audit_actions(db))


def test_announcement_to_a_tier(client, db, program, manager):
    from portal.models import Announcement, AnnouncementRecipient, PartnerTier

    gold = Tier(name="Gold", rank=1, threshold_metric="conversions", threshold_value=5)
    db.session.add(gold)
    db.session.flush()
    member, outsider = PartnerFactory(), PartnerFactory()
    db.session.add(PartnerTier(partner_id=member.id, tier_id=gold.id))
    db.session.commit()
    response = client.post(
        "/admin/announcements/new",
        data={
            "title": "Gold news",
            "body": "Hello Gold",
            "audience_kind": "tiers",
            "tiers": "Gold",
            "when": "now",
        },
    )
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    announcement = db.session.scalars(sa.select(Announcement)).one()
    recipients = db.session.scalars(
        sa.select(AnnouncementRecipient.partner_id).where(
            AnnouncementRecipient.announcement_id == announcement.id
        )
    ).all()
    assert recipients == [member.id]
    assert outsider.id not in recipients


def test_partner_page_shows_the_tier_timeline_and_sets_a_tier(client, db, program, manager):
    from portal.models import PartnerTier, TierChange

    gold = Tier(name="Gold", rank=1, threshold_metric="conversions", threshold_value=5)
    db.session.add(gold)
    partner = PartnerFactory()
    db.session.commit()
    page = client.get(f"/admin/partners/{partner.id}").get_data(as_text=True)
    assert "No tier: the base rate" in page
    response = client.post(
        f"/admin/partners/{partner.id}/tier", data={"tier": str(gold.id), "note": "Launch partner"}
    )
    assert response.status_code == 302
    assert db.session.get(PartnerTier, partner.id).tier_id == gold.id
    change = db.session.scalars(sa.select(TierChange)).one()
    assert (change.reason, change.to_name, change.actor_id, change.note) == (
        "manual",
        "Gold",
        manager.id,
        "Launch partner",
    )
    page = client.get(f"/admin/partners/{partner.id}").get_data(as_text=True)
    assert "Tier: Gold" in page
    assert "set by the program team. Launch partner" in page
    assert "rewards.partner_tier_set" in audit_actions(db)
    # Back to no tier.
    client.post(f"/admin/partners/{partner.id}/tier", data={"tier": "0"})
    assert db.session.get(PartnerTier, partner.id) is None


def test_partner_sees_why_each_amount_and_the_ladder_bonus(client, db, login_as):
    from portal.models import LadderStep, Program
    from portal.services import rewards, tracking
    from portal.services.tracking import ConversionInput

    user = login_as(Role.PARTNER)
    partner = user.partner
    program = db.session.scalars(sa.select(Program)).first()
    if program is None:
        from tests.factories import ProgramFactory

        program = ProgramFactory(timezone="UTC")
    program.fraud_duplicate_order = False
    db.session.add(
        Tier(name="Gold", rank=1, threshold_metric="conversions", threshold_value=2, rate_percent_bp=1500)
    )
    db.session.add(LadderStep(threshold_conversions=2, bonus_minor=2500))
    db.session.flush()
    sales = []
    for n in (1, 2):
        conversion, _created = tracking.record_conversion(
            program,
            ConversionInput(
                transaction_id=f"why-{n}",
                amount_minor=10_000,
                currency=program.currency,
                ref=partner.ref_code,
                occurred_at=datetime(2026, 10, n, 12, tzinfo=UTC),
            ),
            {"n": n},
            received_at=datetime(2026, 10, n, 12, tzinfo=UTC),
        )
        sales.append(conversion)
    rewards.close_month(program, "2026-10", now=datetime(2026, 11, 2, tzinfo=UTC))
    db.session.commit()

    first = client.get(f"/partner/conversions/{sales[0].id}").get_data(as_text=True)
    assert "Why this amount: Base rate: 10% of" in first
    second = client.get(f"/partner/conversions/{sales[1].id}").get_data(as_text=True)
    assert "Your tier Gold: 15% of" in second
    assert "This sale took you to Gold, so it already earns the new rate." in second
    earnings = client.get("/partner/earnings").get_data(as_text=True)
    assert "Monthly ladder bonus" in earnings
    assert "Monthly ladder for 2026-10: 2 conversions reached the 2-conversion step" in earnings
    csv_text = client.get("/partner/earnings.csv").get_data(as_text=True)
    assert "ladder 2026-10" in csv_text


def _tier_row(db, name: str, rank: int) -> Tier:
    row = Tier(
        name=name,
        rank=rank,
        rate_type="percent",
        rate_percent_bp=1000 + rank,
        rate_flat_minor=0,
        threshold_metric="conversions",
        threshold_value=rank * 10,
        period="rolling_30",
    )
    db.session.add(row)
    db.session.flush()
    return row


def test_deleting_the_only_tier_of_a_campaign_says_it_is_now_open_to_nobody(client, db, program, login_as):
    from portal.services import reward_rules
    from portal.services.reward_rules import CampaignInput, RateInput

    gold, silver = _tier_row(db, "Gold", 2), _tier_row(db, "Silver", 1)
    clock = time_machine.travel(datetime(2030, 6, 15, 12, tzinfo=UTC), tick=False)
    clock.start()
    manager = login_as(Role.MANAGER)  # signed in at the pinned time, or the session has expired

    def campaign(name, tiers, starts, ends):
        data = CampaignInput(
            name=name,
            starts_local=starts,
            ends_local=ends,
            rate=RateInput("percent", 2000, 0),
            audience="tiers",
            tier_ids=[t.id for t in tiers],
        )
        return reward_rules.save_campaign(program, manager, data)

    try:
        campaign("Gold rush", [gold], datetime(2030, 6, 1), datetime(2030, 7, 1))
        campaign("Gold and silver", [gold, silver], datetime(2030, 6, 1), datetime(2030, 7, 1))
        campaign("Last spring", [gold], datetime(2030, 3, 1), datetime(2030, 4, 1))  # ended
        db.session.commit()
        assert "open to nobody" not in client.get("/admin/rewards/campaigns").get_data(as_text=True)

        deleted = client.post(f"/admin/rewards/tiers/{gold.id}/delete", follow_redirects=True)
        page = deleted.get_data(as_text=True)
        assert "The campaign “Gold rush” was for this tier only: it is now open to nobody." in page
        assert "Last spring" not in page  # ended: nothing to warn about

        listing = client.get("/admin/rewards/campaigns").get_data(as_text=True)
    finally:
        clock.stop()
    rows = {name: listing.split(name, 1)[1].split("</tr>", 1)[0] for name in ("Gold rush", "Gold and silver")}
    assert "tiers: none left" in rows["Gold rush"] and "open to nobody" in rows["Gold rush"]
    assert "tiers: Silver" in rows["Gold and silver"] and "open to nobody" not in rows["Gold and silver"]

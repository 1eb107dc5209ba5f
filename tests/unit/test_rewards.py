"""The rewards engine: each rule, their precedence, tiers, the ladder, month close, rounding."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from itertools import count

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from portal.models import (
    AutomaticMessageLog,
    Campaign,
    Commission,
    CommissionKind,
    Conversion,
    LadderStep,
    Link,
    MonthClose,
    PartnerTier,
    PrivateDeal,
    ProductRate,
    Program,
    Tag,
    Tier,
)
from portal.services import commissions, outbox, rewards, tracking
from portal.services.rewards import RuleContext, decide, round_half_even
from portal.services.tracking import ConversionInput
from tests.factories import PartnerFactory, ProgramFactory

_tx = count(1)
BERLIN = rewards.ZoneInfo("Europe/Berlin")


@pytest.fixture
def program(db):
    program = ProgramFactory(
        timezone="Europe/Berlin",
        hold_period_days=30,
        commission_type="percent",
        commission_percent_bp=1000,
        fraud_duplicate_order=False,
        fraud_self_referral=False,
    )
    db.session.flush()
    return program


@pytest.fixture
def partner(db):
    return PartnerFactory()


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def berlin(*args) -> datetime:
    return datetime(*args, tzinfo=BERLIN).astimezone(UTC)


def sale(program, partner, amount=10_000, at=None, product=None, customer=None, click_id=None) -> Conversion:
    tx = f"tx-{next(_tx)}"
    conversion, created = tracking.record_conversion(
        program,
        ConversionInput(
            transaction_id=tx,
            amount_minor=amount,
            currency="USD",
            customer_id=customer,
            click_id=click_id,
            ref=None if click_id else partner.ref_code,
            product_id=product,
            occurred_at=at or utc(2026, 11, 10, 12),
        ),
        {"tx": tx},
        received_at=at or utc(2026, 11, 10, 12),  # history: received when it happened
    )
    assert created
    return conversion


def rate_lines(conversion: Conversion) -> list[Commission]:
    return [line for line in conversion.commissions if line.kind in rewards.RATE_KINDS]


def only_rate_line(conversion: Conversion) -> Commission:
    (line,) = rate_lines(conversion)
    return line


def tier(
    db, name="Gold", rank=1, bp=1500, metric="conversions", threshold=3, period="rolling_30", **kw
) -> Tier:
    t = Tier(
        name=name,
        rank=rank,
        rate_type="percent",
        rate_percent_bp=bp,
        rate_flat_minor=0,
        threshold_metric=metric,
        threshold_value=threshold,
        period=period,
        **kw,
    )
    db.session.add(t)
    db.session.flush()
    return t


def put_in_tier(db, partner, t, since=None):
    db.session.add(PartnerTier(partner_id=partner.id, tier_id=t.id, since=since or utc(2026, 1, 1)))
    db.session.flush()


def campaign(db, name="Black week", starts=None, ends=None, bp=2500, **kw) -> Campaign:
    c = Campaign(
        name=name,
        starts_at=starts or utc(2026, 11, 1),
        ends_at=ends or utc(2026, 12, 1),
        rate_type="percent",
        rate_percent_bp=bp,
        rate_flat_minor=0,
        **kw,
    )
    db.session.add(c)
    db.session.flush()
    return c


# --- precedence -------------------------------------------------------------------------------------


def test_precedence_deal_then_campaign_then_product_then_tier_then_base(db, program, partner):
    gold = tier(db, threshold=1000)
    put_in_tier(db, partner, gold)
    db.session.add(
        ProductRate(product_id="pro", rate_type="percent", rate_percent_bp=2000, rate_flat_minor=0)
    )
    black = campaign(db)
    deal = PrivateDeal(partner_id=partner.id, rate_type="percent", rate_percent_bp=3000, rate_flat_minor=0)
    db.session.add(deal)
    db.session.flush()

    line = only_rate_line(sale(program, partner, product="pro"))
    assert (line.kind, line.amount_minor) == ("deal", 3000)
    assert line.explanation["outranked"] == ["campaign", "product", "tier"]

    db.session.delete(deal)
    db.session.flush()
    line = only_rate_line(sale(program, partner, product="pro"))
    assert (line.kind, line.amount_minor) == ("campaign", 2500)
    assert line.explanation["campaign_id"] == black.id

    db.session.delete(black)
    db.session.flush()
    line = only_rate_line(sale(program, partner, product="pro"))
    assert (line.kind, line.amount_minor) == ("product", 2000)

    line = only_rate_line(sale(program, partner, product="other"))
    assert (line.kind, line.amount_minor) == ("tier", 1500)

    db.session.delete(db.session.get(PartnerTier, partner.id))
    db.session.flush()
    line = only_rate_line(sale(program, partner, product="other"))
    assert (line.kind, line.amount_minor) == ("base", 1000)
    assert "outranked" not in line.explanation


def test_bonuses_stack_on_top_of_the_rate(db, program, partner):
    campaign(db, name="Rate", bp=2000)
    campaign(db, name="Bonus", reward="bonus", bonus_minor=500, product_ids=["pro"])
    conversion = sale(program, partner, product="pro")
    kinds = sorted((line.kind, line.amount_minor) for line in conversion.commissions)
    assert kinds == [("bonus", 500), ("campaign", 2000)]
    assert commissions.net_commission(conversion) == 2500
    # Another product: the bonus campaign does not apply.
    other = sale(program, partner, product="basic")
    assert [(line.kind, line.amount_minor) for line in other.commissions] == [("campaign", 2000)]


def test_private_deal_limited_to_products_and_dates(db, program, partner):
    db.session.add(
        PrivateDeal(
            partner_id=partner.id,
            rate_type="flat",
            rate_percent_bp=0,
            rate_flat_minor=777,
            product_ids=["pro"],
            starts_at=utc(2026, 11, 5),
            ends_at=utc(2026, 11, 20),
        )
    )
    db.session.flush()
    assert only_rate_line(sale(program, partner, product="pro", at=utc(2026, 11, 10))).amount_minor == 777
    assert only_rate_line(sale(program, partner, product="basic", at=utc(2026, 11, 10))).kind == "base"
    assert only_rate_line(sale(program, partner, product="pro", at=utc(2026, 11, 20))).kind == "base"
    assert only_rate_line(sale(program, partner, product="pro", at=utc(2026, 11, 4, 23))).kind == "base"
    # Another partner never gets it.
    assert only_rate_line(sale(program, PartnerFactory(), product="pro", at=utc(2026, 11, 10))).kind == "base"


def test_campaign_audiences(db, program, partner):
    silver = tier(db, name="Silver", threshold=1000)
    vip = Tag(name="vip")
    db.session.add(vip)
    db.session.flush()
    by_tier = campaign(db, name="Tiers", audience="tiers", bp=1100, tiers=[silver], product_ids=["a"])
    by_tag = campaign(db, name="Tag", audience="tag", tag_id=vip.id, bp=1200, product_ids=["b"])
    named = campaign(db, name="Named", audience="partners", bp=1300, partners=[partner], product_ids=["c"])
    outsider = PartnerFactory()
    for product in ("a", "b"):
        assert only_rate_line(sale(program, partner, product=product)).kind == "base"
    for product in ("a", "b", "c"):
        assert only_rate_line(sale(program, outsider, product=product)).kind == "base"
    put_in_tier(db, partner, silver)
    partner.tags.append(vip)
    db.session.flush()
    assert only_rate_line(sale(program, partner, product="a")).explanation["campaign_id"] == by_tier.id
    assert only_rate_line(sale(program, partner, product="b")).explanation["campaign_id"] == by_tag.id
    assert only_rate_line(sale(program, partner, product="c")).explanation["campaign_id"] == named.id
    assert only_rate_line(sale(program, outsider, product="c")).kind == "base"


def test_links_only_campaign_needs_a_click_on_its_own_link(db, program, partner):
    private = campaign(db, name="Mine", audience="partners", partners=[partner], bp=4000, links_only=True)
    link = Link(partner_id=partner.id, code="mine1", label="Mine", campaign_id=private.id)
    plain = Link(partner_id=partner.id, code="plain1", label="Plain")
    db.session.add_all([link, plain])
    db.session.flush()
    from portal.models import Click

    def click(on: Link) -> str:
        click_id = f"c{next(_tx):031d}"
        db.session.add(
            Click(
                id=click_id,
                partner_id=partner.id,
                link_id=on.id,
                code=on.code,
                channel="other",
                destination_url="https://shop.example/",
                ip_hash="x",
                created_at=utc(2026, 11, 10, 11),
            )
        )
        db.session.flush()
        return click_id

    assert only_rate_line(sale(program, partner, click_id=click(link))).amount_minor == 4000
    assert only_rate_line(sale(program, partner, click_id=click(plain))).kind == "base"
    assert only_rate_line(sale(program, partner)).kind == "base"


def test_campaign_starting_and_ending_mid_day_in_the_program_time_zone(db, program, partner):
    from portal.services.reward_rules import CampaignInput, RateInput, save_campaign
    from tests.factories import UserFactory

    saved = save_campaign(
        program,
        UserFactory(),
        CampaignInput(
            name="Lunch deal",
            starts_local=datetime(2026, 11, 10, 12, 0),
            ends_local=datetime(2026, 11, 12, 18, 30),
            rate=RateInput("percent", 2500),
        ),
    )
    # Berlin is UTC+1 in November.
    assert saved.starts_at == utc(2026, 11, 10, 11, 0)
    assert saved.ends_at == utc(2026, 11, 12, 17, 30)
    cases = [
        (utc(2026, 11, 10, 10, 59, 59), "base"),
        (utc(2026, 11, 10, 11, 0), "campaign"),
        (utc(2026, 11, 12, 17, 29, 59), "campaign"),
        (utc(2026, 11, 12, 17, 30), "base"),
    ]
    for at, kind in cases:
        assert only_rate_line(sale(program, partner, at=at)).kind == kind, at


def test_campaign_input_across_a_daylight_saving_change(db, program):
    # 29 March 2026: Berlin moves from UTC+1 to UTC+2 at 02:00 local.
    assert rewards.local_to_utc(datetime(2026, 3, 29, 1, 0), BERLIN) == utc(2026, 3, 29, 0, 0)
    assert rewards.local_to_utc(datetime(2026, 3, 29, 12, 0), BERLIN) == utc(2026, 3, 29, 10, 0)


# --- recurring ------------------------------------------------------------------------------------------


def test_renewals_earn_forever_by_default(db, program, partner):
    sale(program, partner, customer="c1", at=utc(2025, 1, 10))
    line = only_rate_line(sale(program, partner, customer="c1", at=utc(2026, 11, 10)))
    assert line.amount_minor == 1000
    assert line.explanation["renewal"]["mode"] == "forever"


def test_renewals_for_n_months(db, program, partner):
    program.recurring_mode = "months"
    program.recurring_months = 2
    first = sale(program, partner, customer="c2", at=utc(2026, 9, 15, 12))
    assert "renewal" not in only_rate_line(first).explanation
    # Two calendar months of Berlin wall-clock time: 14:00 CEST on 15 Sep → 14:00 CET on 15 Nov = 13:00 UTC.
    renewal = only_rate_line(sale(program, partner, customer="c2", at=utc(2026, 11, 15, 12, 59)))
    assert renewal.amount_minor == 1000
    ended = only_rate_line(sale(program, partner, customer="c2", at=utc(2026, 11, 15, 13)))
    assert ended.amount_minor == 0
    assert ended.explanation["rule"] == "renewal_ended"
    # Another partner's customer history does not count as a renewal for this one.
    assert (
        only_rate_line(sale(program, PartnerFactory(), customer="c2", at=utc(2026, 12, 1))).amount_minor
        == 1000
    )


def test_no_recurring_pays_the_first_purchase_only(db, program, partner):
    program.recurring_mode = "none"
    assert only_rate_line(sale(program, partner, customer="c3", at=utc(2026, 11, 1))).amount_minor == 1000
    assert only_rate_line(sale(program, partner, customer="c3", at=utc(2026, 11, 2))).amount_minor == 0


# --- tiers -------------------------------------------------------------------------------------------------


def test_the_conversion_that_crosses_the_threshold_upgrades_and_earns_the_new_rate(db, program, partner):
    silver = tier(db, name="Silver", rank=1, bp=1500, threshold=3)
    gold = tier(db, name="Gold", rank=2, bp=2000, threshold=5)
    first = sale(program, partner, at=utc(2026, 11, 1, 10))
    second = sale(program, partner, at=utc(2026, 11, 2, 10))
    assert [only_rate_line(c).kind for c in (first, second)] == ["base", "base"]
    assert rewards.current_tier(partner.id) is None

    third = sale(program, partner, at=utc(2026, 11, 3, 10))
    line = only_rate_line(third)
    assert (line.kind, line.amount_minor, line.explanation["tier"]) == ("tier", 1500, "Silver")
    assert line.explanation["reached_with_this_sale"] is True
    assert rewards.current_tier(partner.id) == silver
    (change,) = rewards.tier_history(partner.id)
    assert (change.to_name, change.upgrade, change.reason, change.conversion_id) == (
        "Silver",
        True,
        "threshold_reached",
        third.id,
    )
    assert change.metric_value == 3
    # The partner was told (the automatic "tier up" message, once for this change), by the
    # outbox's messages consumer after the commit.
    outbox.dispatch()
    assert db.session.scalar(
        sa.select(sa.func.count()).where(
            AutomaticMessageLog.partner_id == partner.id, AutomaticMessageLog.kind == "tier_upgrade"
        )
    )
    fourth = only_rate_line(sale(program, partner, at=utc(2026, 11, 4, 10)))
    assert "reached_with_this_sale" not in fourth.explanation
    fifth = only_rate_line(sale(program, partner, at=utc(2026, 11, 5, 10)))
    assert (fifth.explanation["tier"], fifth.amount_minor) == ("Gold", 2000)
    assert rewards.current_tier(partner.id) == gold


def test_revenue_tier_counts_sales_net_of_refunds_and_skips_rejected(db, program, partner):
    tier(db, name="Big", metric="revenue", threshold=25_000, period="previous_month")
    first = sale(program, partner, amount=10_000, at=utc(2026, 11, 2))
    tracking.refund_conversion(first, 2_000, None)  # 8,000 counts
    sale(program, partner, amount=10_000, at=utc(2026, 11, 3))  # 18,000
    refunded = sale(program, partner, amount=5_000, at=utc(2026, 11, 4))
    tracking.refund_conversion(refunded, None, None)  # rejected: 0 counts
    assert only_rate_line(sale(program, partner, amount=6_000, at=utc(2026, 11, 5))).kind == "base"  # 24,000
    assert only_rate_line(sale(program, partner, amount=1_000, at=utc(2026, 11, 6))).kind == "tier"  # 25,000


def test_downgrade_only_after_a_full_month_below(db, program, partner):
    silver = tier(db, name="Silver", threshold=2, period="previous_month")
    sale(program, partner, at=berlin(2026, 10, 20, 12))
    sale(program, partner, at=berlin(2026, 10, 21, 12))
    assert rewards.current_tier(partner.id) == silver
    since = db.session.get(PartnerTier, partner.id).since

    # October qualified; November has nothing. Closing October changes nothing.
    report = rewards.close_month(program, "2026-10", now=utc(2026, 11, 1, 1))
    assert (report.downgrades, report.upgrades) == (0, 0)
    # A refund in the middle of November does not downgrade either (never mid-month).
    first = db.session.scalars(sa.select(Conversion).where(Conversion.partner_id == partner.id)).first()
    tracking.refund_conversion(first, None, None)
    assert rewards.current_tier(partner.id) == silver
    assert db.session.get(PartnerTier, partner.id).since == since

    report = rewards.close_month(program, "2026-11", now=utc(2026, 12, 1, 1))
    assert report.downgrades == 1
    assert rewards.current_tier(partner.id) is None
    change = rewards.tier_history(partner.id)[0]
    assert (change.from_name, change.to_name, change.upgrade, change.reason) == (
        "Silver",
        None,
        False,
        "below_threshold",
    )
    # Closing again is harmless.
    again = rewards.close_month(program, "2026-11", now=utc(2026, 12, 2))
    assert (again.downgrades, again.upgrades, again.first_close) == (0, 0, False)
    assert len(rewards.tier_history(partner.id)) == 2


def test_a_partner_upgraded_mid_month_keeps_the_tier_through_the_next_month(db, program, partner):
    silver = tier(db, name="Silver", threshold=3, period="rolling_30")
    for day in (18, 19, 20):
        sale(program, partner, at=berlin(2026, 11, day, 12))
    assert rewards.current_tier(partner.id) == silver
    for conversion in db.session.scalars(
        sa.select(Conversion).where(Conversion.partner_id == partner.id)
    ).all():
        tracking.refund_conversion(conversion, None, None)
    # Below since the refunds, but the partner has not held the tier for a whole month yet.
    assert rewards.close_month(program, "2026-11", now=utc(2026, 12, 1)).downgrades == 0
    assert rewards.current_tier(partner.id) == silver
    # A full month (December) below: now it goes.
    assert rewards.close_month(program, "2026-12", now=utc(2027, 1, 1)).downgrades == 1
    assert rewards.current_tier(partner.id) is None


def test_downgrade_lands_on_the_highest_tier_still_reached(db, program, partner):
    silver = tier(db, name="Silver", rank=1, threshold=1, period="previous_month")
    gold = tier(db, name="Gold", rank=2, threshold=3, period="previous_month")
    put_in_tier(db, partner, gold, since=utc(2026, 9, 1))
    sale(program, partner, at=berlin(2026, 11, 10))
    assert rewards.close_month(program, "2026-11", now=utc(2026, 12, 1)).downgrades == 1
    assert rewards.current_tier(partner.id) == silver
    assert db.session.get(PartnerTier, partner.id).since == berlin(2026, 12, 1)


def test_month_close_upgrades_a_partner_who_qualifies(db, program, partner):
    put_in_tier_later = tier(db, name="Silver", threshold=2, period="previous_month")
    sale(program, partner, at=berlin(2026, 11, 10))
    # The threshold was lowered after the sales: the close still catches it.
    put_in_tier_later.threshold_value = 1
    assert rewards.close_month(program, "2026-11", now=utc(2026, 12, 1)).upgrades == 1
    assert rewards.current_tier(partner.id) == put_in_tier_later


def test_close_month_refuses_a_month_not_over(db, program):
    from portal.errors import DomainError

    with pytest.raises(DomainError):
        rewards.close_month(program, "2026-11", now=berlin(2026, 11, 30, 23, 59))
    with pytest.raises(DomainError):
        rewards.close_month(program, "2026-13", now=utc(2027, 1, 1))


# --- the monthly ladder --------------------------------------------------------------------------------


@pytest.fixture
def ladder(db):
    steps = [
        LadderStep(threshold_conversions=3, bonus_minor=5_000),
        LadderStep(threshold_conversions=5, bonus_minor=15_000),
    ]
    db.session.add_all(steps)
    db.session.flush()
    return steps


def test_ladder_bonus_is_one_line_per_partner_month(db, program, partner, ladder):
    conversions = [sale(program, partner, at=berlin(2026, 11, day, 12)) for day in range(1, 6)]
    # 23:30 UTC on 30 November is December in Berlin: not counted for November.
    sale(program, partner, at=utc(2026, 11, 30, 23, 30))
    small = PartnerFactory()
    for day in (1, 2):
        sale(program, small, at=berlin(2026, 11, day))

    report = rewards.close_month(program, "2026-11", now=utc(2026, 12, 1))
    assert report.bonus_lines == 1
    bonus = rewards.ladder_bonus_line(partner.id, "2026-11")
    assert (bonus.kind, bonus.amount_minor, bonus.conversion_id, bonus.period) == (
        "bonus",
        15_000,
        None,
        "2026-11",
    )
    assert bonus.explanation["conversions"] == 5
    assert bonus.confirm_after == berlin(2026, 12, 1) + timedelta(days=30)
    assert rewards.ladder_bonus_line(small.id, "2026-11") is None
    assert rewards.close_month(program, "2026-11", now=utc(2026, 12, 2)).bonus_lines == 0
    assert db.session.scalar(sa.select(sa.func.count()).where(Commission.period == "2026-11")) == 1
    assert conversions  # the five sales above


def test_refund_of_a_counted_conversion_reverses_the_ladder_bonus_with_new_lines(
    db, program, partner, ladder
):
    conversions = [sale(program, partner, at=berlin(2026, 11, day, 12)) for day in range(1, 6)]
    rewards.close_month(program, "2026-11", now=utc(2026, 12, 1))
    bonus = rewards.ladder_bonus_line(partner.id, "2026-11")

    tracking.refund_conversion(conversions[0], None, "customer changed mind")  # 4 left: step 3 → 50.00
    reversals = db.session.scalars(sa.select(Commission).where(Commission.reverses_id == bonus.id)).all()
    assert [(r.kind, r.amount_minor, r.reason_code) for r in reversals] == [("reversal", -10_000, "refund")]
    assert reversals[0].conversion_id is None
    assert reversals[0].explanation["order"] == conversions[0].transaction_id
    db.session.refresh(bonus)
    assert bonus.amount_minor == 15_000  # never edited

    tracking.refund_conversion(conversions[1], 5_000, None)  # partial: still counts
    tracking.refund_conversion(conversions[2], None, None)  # 3 left: still step 3
    reversals = db.session.scalars(sa.select(Commission).where(Commission.reverses_id == bonus.id)).all()
    assert len(reversals) == 1
    from tests.factories import UserFactory

    tracking.reject_conversion(conversions[3], UserFactory(), "fraud_risk", None)  # 2 left: no step
    reversals = db.session.scalars(
        sa.select(Commission).where(Commission.reverses_id == bonus.id).order_by(Commission.id)
    ).all()
    assert [(r.amount_minor, r.reason_code) for r in reversals] == [
        (-10_000, "refund"),
        (-5_000, "fraud_risk"),
    ]
    net = db.session.scalar(
        sa.select(sa.func.sum(Commission.amount_minor)).where(
            sa.or_(Commission.id == bonus.id, Commission.reverses_id == bonus.id)
        )
    )
    assert net == 0


def test_reversed_ladder_bonus_already_paid_is_a_clawback(db, program, partner, ladder):
    conversions = [sale(program, partner, at=berlin(2026, 11, day, 12)) for day in range(1, 4)]
    rewards.close_month(program, "2026-11", now=utc(2026, 12, 1))
    bonus = rewards.ladder_bonus_line(partner.id, "2026-11")
    bonus.status = "confirmed"
    db.session.flush()
    tracking.refund_conversion(conversions[0], None, None)
    (reversal,) = db.session.scalars(sa.select(Commission).where(Commission.reverses_id == bonus.id)).all()
    assert (reversal.kind, reversal.status, reversal.amount_minor) == ("reversal", "confirmed", -5_000)


@pytest.mark.postgres
def test_a_months_ladder_bonus_cannot_be_written_twice(db, program, partner, ladder, database_backend):
    for day in range(1, 4):
        sale(program, partner, at=berlin(2026, 11, day, 12))
    assert rewards.write_ladder_bonuses(program, "2026-11") == 1
    savepoint = db.session.begin_nested()
    with pytest.raises(sa.exc.IntegrityError):
        db.session.add(
            Commission(
                partner_id=partner.id,
                kind="bonus",
                amount_minor=5_000,
                currency="USD",
                confirm_after=utc(2027, 1, 1),
                period="2026-11",
            )
        )
        db.session.flush()
    savepoint.rollback()
    # The job itself skips what is there, and survives a competing insert.
    assert rewards.write_ladder_bonuses(program, "2026-11") == 0
    assert db.session.scalar(sa.select(sa.func.count()).where(Commission.period == "2026-11")) == 1


@pytest.mark.postgres
def test_month_close_record_is_written_once(db, program, partner, ladder, database_backend):
    rewards.close_month(program, "2026-11", now=utc(2026, 12, 1))
    rewards.close_month(program, "2026-11", now=utc(2026, 12, 1))
    assert db.session.scalar(sa.select(sa.func.count()).select_from(MonthClose)) == 1
    assert rewards.close_due_month(program, now=utc(2026, 12, 5)) is None
    assert rewards.close_due_month(program, now=utc(2027, 1, 2)).month == "2026-12"


# --- rounding and totals ------------------------------------------------------------------------------------


@given(numerator=st.integers(min_value=-(10**15), max_value=10**15), denominator=st.integers(1, 10**9))
def test_round_half_even_matches_decimal(numerator, denominator):
    expected = (Decimal(numerator) / Decimal(denominator)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    assert round_half_even(numerator, denominator) == int(expected)


@pytest.mark.parametrize(
    ("n", "d", "expected"), [(5, 10, 0), (15, 10, 2), (25, 10, 2), (-5, 10, 0), (-15, 10, -2)]
)
def test_round_half_even_ties(n, d, expected):
    assert round_half_even(n, d) == expected


def _context(rate_bp: int | None, bonuses: list[int]) -> RuleContext:
    context = RuleContext()
    if rate_bp is not None:
        context.campaigns = [
            Campaign(id=1, name="c", rate_type="percent", rate_percent_bp=rate_bp, rate_flat_minor=0)
        ]
    context.bonus_campaigns = [
        Campaign(id=10 + i, name=f"b{i}", reward="bonus", bonus_minor=b) for i, b in enumerate(bonuses)
    ]
    return context


@given(
    amount=st.integers(min_value=0, max_value=10**10),
    base_bp=st.integers(0, 10_000),
    campaign_bp=st.one_of(st.none(), st.integers(0, 10_000)),
    bonuses=st.lists(st.integers(1, 10**6), max_size=3),
)
def test_line_totals_add_up(amount, base_bp, campaign_bp, bonuses):
    program = Program(
        commission_type="percent", commission_percent_bp=base_bp, commission_flat_minor=0, currency="USD"
    )
    conversion = Conversion(
        amount_minor=amount, currency="USD", occurred_at=utc(2026, 11, 1), refunded_minor=0
    )
    drafts = decide(program, conversion, _context(campaign_bp, bonuses))
    rate = campaign_bp if campaign_bp is not None else base_bp
    exact = Decimal(amount * rate) / 10_000
    assert abs(Decimal(drafts[0].amount_minor) - exact) <= Decimal("0.5")
    assert all(d.amount_minor == d.explanation["result_minor"] for d in drafts)
    assert sum(d.amount_minor for d in drafts) == drafts[0].amount_minor + sum(bonuses)


@given(
    lines=st.lists(st.integers(min_value=0, max_value=10**8), min_size=1, max_size=3),
    amount=st.integers(min_value=1, max_value=10**9),
    refunds=st.lists(st.integers(min_value=1, max_value=100), min_size=1, max_size=6),
)
def test_refund_reversals_per_line_never_overshoot_and_end_at_zero(lines, amount, refunds):
    """The engine's per-line rule: each line's reversals so far are its refunded share, rounded once."""
    total_weight = sum(refunds)
    refunded = 0
    reversed_so_far = [0] * len(lines)
    for i, weight in enumerate(refunds):
        step = amount - refunded if i == len(refunds) - 1 else amount * weight // total_weight
        refunded = min(amount, refunded + step)
        for j, earned in enumerate(lines):
            target = round_half_even(earned * refunded, amount)
            assert reversed_so_far[j] <= target <= earned
            reversed_so_far[j] = target
    assert reversed_so_far == lines


def test_partial_refunds_reverse_every_line_and_add_up(db, program, partner):
    campaign(db, name="Bonus", reward="bonus", bonus_minor=333)
    conversion = sale(program, partner, amount=12_345)
    assert commissions.net_commission(conversion) == 1234 + 333
    tracking.refund_conversion(conversion, 4_000, None)
    tracking.refund_conversion(conversion, 4_000, None)
    mid = commissions.net_commission(conversion)
    assert 0 < mid < 1234 + 333
    tracking.refund_conversion(conversion, None, None)
    assert commissions.net_commission(conversion) == 0
    for line in conversion.commissions:
        if line.kind in rewards.RATE_KINDS or line.kind == CommissionKind.BONUS:
            taken = sum(c.amount_minor for c in conversion.commissions if c.reverses_id == line.id)
            assert taken == -line.amount_minor


# --- telling partners ---------------------------------------------------------------------------------------


def test_campaign_starting_is_announced_once_to_its_audience(db, program, partner):
    from portal.services import lifecycle

    lifecycle.get_template("campaign_starting")
    other = PartnerFactory()
    campaign(
        db,
        name="Soon",
        audience="partners",
        partners=[partner],
        starts=utc(2026, 11, 10, 8),
        ends=utc(2026, 11, 20),
    )
    assert rewards.announce_starting_campaigns(program, now=utc(2026, 11, 9, 12)) == 1
    outbox.dispatch()  # the messages consumer tells the audience from the campaign.started event
    assert rewards.announce_starting_campaigns(program, now=utc(2026, 11, 10, 12)) == 0
    outbox.dispatch()
    logs = db.session.scalars(
        sa.select(AutomaticMessageLog).where(AutomaticMessageLog.kind == "campaign_starting")
    ).all()
    assert [log.partner_id for log in logs] == [partner.id]
    assert other.id not in [log.partner_id for log in logs]


def test_tiers_audience_for_announcements(db, program, partner):
    from portal.services.announcements import AUDIENCES

    gold = tier(db, name="Gold", threshold=100)
    put_in_tier(db, partner, gold)
    PartnerFactory()
    audience = AUDIENCES["tiers"]
    keys = audience.parse(["gold"])
    assert keys == [gold.id]
    assert db.session.scalars(audience.partner_ids(keys)).all() == [partner.id]
    from portal.errors import DomainError

    with pytest.raises(DomainError):
        audience.parse(["Platinum"])


def test_every_line_explains_itself(app, db, program, partner, ladder):
    gold = tier(db, name="Gold", threshold=1)
    db.session.add(ProductRate(product_id="pro", rate_type="flat", rate_percent_bp=0, rate_flat_minor=450))
    db.session.flush()
    texts = []
    with app.test_request_context():
        conversions = [sale(program, partner, at=berlin(2026, 11, day, 12)) for day in (1, 2, 3)]
        conversions.append(sale(program, partner, at=berlin(2026, 11, 4), product="pro"))
        campaign(
            db, name="Autumn", starts=utc(2026, 11, 5), ends=utc(2026, 11, 6), reward="bonus", bonus_minor=200
        )
        conversions.append(sale(program, partner, at=utc(2026, 11, 5, 12)))
        rewards.close_month(program, "2026-11", now=utc(2026, 12, 1))
        tracking.refund_conversion(conversions[0], 3_000, None)
        tracking.refund_conversion(conversions[1], None, None)
        lines = db.session.scalars(sa.select(Commission).where(Commission.partner_id == partner.id)).all()
        for line in lines:
            texts.append((line.explanation.get("rule"), rewards.explain(line)))
    rules = {rule for rule, _text in texts}
    assert {"tier", "product", "campaign_bonus", "ladder", "refund", "ladder_reversal"} <= rules
    assert all(text and "%(" not in text for _rule, text in texts)
    by_rule = dict(texts)
    assert "Gold" in by_rule["tier"]
    assert "Autumn" in by_rule["campaign_bonus"]
    assert "2026-11" in by_rule["ladder"]
    assert gold.name in by_rule["tier"]


# --- jobs -------------------------------------------------------------------------------------------------


def test_jobs_run_twice_do_the_work_once(runner, db, program, partner, ladder):
    for day in (1, 2, 3):
        sale(program, partner, at=berlin(2026, 10, day, 12))

    first = runner.invoke(args=["portal", "close-month", "--month", "2026-10"])
    assert first.exit_code == 0, first.output
    assert "1 ladder bonus lines" in first.output
    second = runner.invoke(args=["portal", "close-month", "--month", "2026-10"])
    assert "0 ladder bonus lines" in second.output and "closed before" in second.output
    assert db.session.scalar(sa.select(sa.func.count()).where(Commission.period == "2026-10")) == 1

    confirmed = runner.invoke(args=["portal", "confirm-commissions"])
    assert confirmed.exit_code == 0, confirmed.output
    assert "Confirmed 4 commission lines." in confirmed.output  # three sales and the October bonus
    assert "Confirmed 0 commission lines." in runner.invoke(args=["portal", "confirm-commissions"]).output
    assert "Confirmed 0 commission lines." in runner.invoke(args=["portal", "confirm"]).output

    bad = runner.invoke(args=["portal", "close-month", "--month", "October"])
    assert bad.exit_code != 0 and "YYYY-MM" in bad.output


def test_deleting_a_tier_moves_its_partners_to_the_base_rate_with_a_timeline_entry(db, program, partner):
    from portal.services import reward_rules
    from tests.factories import UserFactory

    gold = tier(db, name="Gold", threshold=100)
    put_in_tier(db, partner, gold)
    campaign(db, name="For Gold", audience="tiers", tiers=[gold])
    assert reward_rules.delete_tier(program, UserFactory(), gold) == 1
    db.session.flush()
    assert rewards.current_tier(partner.id) is None
    (change,) = rewards.tier_history(partner.id)
    assert (change.from_name, change.to_name, change.reason, change.from_tier_id) == (
        "Gold",
        None,
        "tier_removed",
        None,
    )
    assert only_rate_line(sale(program, partner)).kind == "base"

"""Dashboard figures read from the rollups: ranges, series, breakdowns, trends, queues, CSV."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from portal.charts import bar_chart, nice_top
from portal.models import (
    BatchStatus,
    CampaignRequest,
    ConversionStatus,
    PartnerDailyStat,
    PartnerStatus,
    PartnerTrend,
    PayoutBatch,
    Role,
)
from portal.services import dashboards, tracking
from portal.services.dashboards import DateRange, Figures, date_range
from portal.services.links import create_link, grant_custom_slug
from tests.creative_support import make_text
from tests.factories import PartnerFactory, UserFactory, at_noon, sale, store_clicks

pytestmark = pytest.mark.postgres

TODAY = date(2026, 3, 15)


# --- ranges and figures --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "today", "start", "end"),
    [
        ("7d", date(2026, 3, 15), date(2026, 3, 9), date(2026, 3, 15)),
        ("30d", date(2026, 3, 15), date(2026, 2, 14), date(2026, 3, 15)),
        ("90d", date(2026, 3, 15), date(2025, 12, 16), date(2026, 3, 15)),
        ("this_month", date(2026, 3, 1), date(2026, 3, 1), date(2026, 3, 1)),
        ("last_month", date(2026, 1, 10), date(2025, 12, 1), date(2025, 12, 31)),
        ("last_month", date(2024, 3, 31), date(2024, 2, 1), date(2024, 2, 29)),
    ],
)
def test_presets_are_calendar_days_ending_today(preset, today, start, end):
    rng = date_range(preset, today)
    assert (rng.start, rng.end, rng.preset) == (start, end, preset)
    assert rng.days == (end - start).days + 1


def test_a_custom_range_carries_its_dates_in_links():
    rng = date_range("custom", TODAY, date(2026, 1, 2), date(2026, 2, 3))
    assert rng.query_args() == {"range": "custom", "start": "2026-01-02", "end": "2026-02-03"}
    assert date_range("7d", TODAY).query_args() == {"range": "7d"}
    with pytest.raises(ValueError, match="unknown range"):
        date_range("custom", TODAY)


def test_rates_and_earnings_per_click():
    figures = Figures(clicks=3, conversions=3, conversions_rejected=1, commission_minor=5)
    assert figures.counted == 2
    assert figures.conversion_rate == Decimal(2) / 3
    assert figures.epc_minor == 2  # 5 / 3 = 1.67, half up
    assert Figures(clicks=2, commission_minor=1).epc_minor == 1  # 0.5 rounds up
    assert Figures().conversion_rate is None
    assert Figures().epc_minor is None
    assert (figures + figures).clicks == 6


# --- series -------------------------------------------------------------------------------


def test_a_daily_series_has_every_day_of_the_range(db, program):
    partner = PartnerFactory()
    store_clicks(db, partner, date(2026, 3, 10), 2)
    store_clicks(db, partner, date(2026, 3, 12), 5)
    store_clicks(db, partner, date(2026, 3, 20), 9)  # after the range
    series = dashboards.partner_series(partner.id, DateRange(date(2026, 3, 9), date(2026, 3, 15)))
    assert series.grain == "day"
    assert [b.start.day for b in series.buckets] == [9, 10, 11, 12, 13, 14, 15]
    assert series.values("clicks") == [0, 2, 0, 5, 0, 0, 0]


def test_long_ranges_group_by_week_then_month(db, program):
    partner = PartnerFactory()
    store_clicks(db, partner, date(2026, 1, 4), 1)  # a Sunday
    store_clicks(db, partner, date(2026, 1, 5), 2)  # the Monday after
    weekly = dashboards.partner_series(partner.id, DateRange(date(2025, 12, 31), date(2026, 3, 31)))
    assert weekly.grain == "week"
    assert weekly.buckets[0].start == date(2025, 12, 31)  # clipped to the range
    assert weekly.buckets[0].end == date(2026, 1, 4)
    assert weekly.values("clicks")[:2] == [1, 2]
    assert weekly.buckets[-1].end == date(2026, 3, 31)
    monthly = dashboards.partner_series(partner.id, DateRange(date(2025, 1, 1), date(2026, 6, 30)))
    assert monthly.grain == "month"
    assert len(monthly.buckets) == 18
    assert monthly.buckets[12].start == date(2026, 1, 1)
    assert monthly.values("clicks")[12] == 3


# --- breakdowns and activity ------------------------------------------------------------------


def test_breakdowns_are_the_partners_own_and_keep_a_renamed_link_together(db, program):
    admin = UserFactory(role="admin")
    mine, theirs = PartnerFactory(), PartnerFactory()
    blog = create_link(mine, program, label="Blog", channel="seo", campaign="spring")
    ads = create_link(mine, program, label="Ads", channel="ads", sub_id="banner")
    store_clicks(db, mine, TODAY, 3, blog)
    grant_custom_slug(blog, admin, "my-blog")
    store_clicks(db, mine, TODAY, 2, blog)  # same link, its new code
    clicked = store_clicks(db, mine, TODAY, 1, ads)
    store_clicks(db, mine, TODAY, 4)  # the partner-code link
    store_clicks(db, theirs, TODAY, 50)
    sale(db, program, mine, TODAY, click_id=clicked[0])
    sale(db, program, mine, TODAY)  # by ref code: no click
    rng = DateRange(TODAY, TODAY)

    by_link = dashboards.partner_breakdown(mine.id, rng, "link")
    assert [(r.label, r.code, r.figures.clicks, r.figures.counted) for r in by_link] == [
        ("Blog", "my-blog", 5, 0),
        ("Your partner-code link", mine.ref_code, 4, 0),
        ("Ads", ads.code, 1, 1),
        ("No click (ref code or returning customer)", None, 0, 1),
    ]
    by_channel = {r.label: r.figures.clicks for r in dashboards.partner_breakdown(mine.id, rng, "channel")}
    assert by_channel == {
        "SEO / content site": 5,
        "Other": 4,
        "Paid ads": 1,
        "No click (ref code or returning customer)": 0,
    }
    by_campaign = {r.label: r.figures.clicks for r in dashboards.partner_breakdown(mine.id, rng, "campaign")}
    assert by_campaign == {"spring": 5, "(none)": 5}
    by_sub = {r.label: r.figures.counted for r in dashboards.partner_breakdown(mine.id, rng, "sub_id")}
    assert by_sub == {"banner": 1, "(none)": 1}
    assert dashboards.partner_figures(mine.id, rng).clicks == 10


def test_recent_activity_is_newest_first_and_only_the_partners(db, program):
    mine, theirs = PartnerFactory(), PartnerFactory()
    link = create_link(mine, program, label="Newsletter", channel="email")
    clicked = store_clicks(db, mine, TODAY - timedelta(days=2), 1, link)
    store_clicks(db, mine, TODAY - timedelta(days=3), 1, link, is_bot=True)  # bots are not activity
    store_clicks(db, theirs, TODAY, 3)
    tracking.record_signup(
        program, tracking.SignupInput("cus-1", click_id=clicked[0], occurred_at=at_noon(TODAY)), {"s": 1}
    )
    sale(db, program, mine, TODAY - timedelta(days=1), amount=4990, click_id=clicked[0])
    activity = dashboards.recent_activity(mine.id)
    assert [(a.kind, a.label) for a in activity] == [
        ("signup", "Newsletter"),
        ("conversion", activity[1].label),
        ("click", "Newsletter"),
    ]
    assert activity[1].amount_minor == 4990
    assert activity[1].status == ConversionStatus.PENDING


# --- the operators' lists -----------------------------------------------------------------


def test_churn_risk_rising_and_falling(db, program):
    now_day, before_day = TODAY - timedelta(days=5), TODAY - timedelta(days=40)
    halved = PartnerFactory(user__name="Halved clicks")
    store_clicks(db, halved, before_day, 10)
    store_clicks(db, halved, now_day, 5)
    fewer_sales = PartnerFactory(user__name="Fewer sales")
    for _ in range(2):
        sale(db, program, fewer_sales, before_day)
    sale(db, program, fewer_sales, now_day)
    store_clicks(db, fewer_sales, now_day, 3)
    quiet = PartnerFactory(user__name="Quiet 21 days")
    store_clicks(db, quiet, TODAY - timedelta(days=21), 1)
    store_clicks(db, quiet, TODAY - timedelta(days=45), 1)  # the same before and now: no drop
    not_yet_quiet = PartnerFactory(user__name="Quiet 20 days")
    store_clicks(db, not_yet_quiet, TODAY - timedelta(days=20), 1)
    store_clicks(db, not_yet_quiet, TODAY - timedelta(days=45), 1)
    long_gone = PartnerFactory(user__name="Long gone")
    store_clicks(db, long_gone, TODAY - timedelta(days=200), 7)
    never = PartnerFactory(user__name="Never clicked", status_changed_at=at_noon(TODAY - timedelta(days=30)))
    PartnerFactory(user__name="New", status_changed_at=at_noon(TODAY - timedelta(days=3)))
    growing = PartnerFactory(user__name="Growing")
    store_clicks(db, growing, before_day, 2)
    store_clicks(db, growing, now_day, 9)
    suspended = PartnerFactory(status=PartnerStatus.SUSPENDED)
    store_clicks(db, suspended, before_day, 10)

    trends = dashboards.partner_trends(TODAY, program.timezone)
    at_risk = {t.partner.name: t.reasons for t in trends.at_risk}
    assert at_risk == {
        "Halved clicks": ("clicks_halved",),
        "Fewer sales": ("conversions_halved",),
        "Quiet 21 days": ("quiet",),
        "Long gone": ("quiet",),
        "Never clicked": ("never_clicked",),
    }
    # Most valuable first: conversions before, then clicks before.
    assert [t.partner.name for t in trends.at_risk][:2] == ["Fewer sales", "Halved clicks"]
    assert [t.partner.name for t in trends.rising] == ["Growing"]
    assert [t.partner.name for t in trends.falling] == ["Fewer sales", "Halved clicks"]
    gone = next(t for t in trends.at_risk if t.partner.id == long_gone.id)
    assert gone.last_click == TODAY - timedelta(days=200)
    assert next(t for t in trends.at_risk if t.partner.id == never.id).last_click is None


def test_top_partners_by_sales_and_leaderboards(db, program):
    small, big = PartnerFactory(), PartnerFactory()
    sale(db, program, small, TODAY, amount=1_000)
    sale(db, program, big, TODAY, amount=9_000)
    sale(db, program, big, TODAY - timedelta(days=60), amount=99_000)  # outside the range
    link = create_link(big, program, label="Video", channel="video")
    copy = make_text(UserFactory(role=Role.MANAGER), program, name="Tent review copy")
    store_clicks(db, big, TODAY, 3, link, creative_id=copy.id)
    store_clicks(db, big, TODAY, 1, link, creative_id=9999)  # a ?creative= number not in the library
    rng = date_range("7d", TODAY)
    top = dashboards.top_partners(rng)
    assert [(line.partner.id, line.figures.sales_minor) for line in top] == [
        (big.id, 9_000),
        (small.id, 1_000),
    ]
    assert [r.label for r in dashboards.creative_leaderboard(rng)] == [
        "Tent review copy",
        "Creative #9999 (not in the library)",
    ]
    by_creative = dashboards.partner_breakdown(big.id, rng, "creative")
    assert [(r.label, r.figures.clicks) for r in by_creative] == [
        ("Tent review copy", 3),
        ("Creative #9999 (not in the library)", 1),
        ("(none)", 0),  # the sale made without a click
    ]
    channels = {r.key: r.figures for r in dashboards.channel_leaderboard(rng)}
    assert channels["video"].clicks == 4
    assert channels[""].counted == 2  # the sales by ref code, without a click
    assert dashboards.program_figures(rng).sales_minor == 10_000
    # The default view takes its top partners from the trends' single pass: the same list.
    month = date_range("30d", TODAY)
    assert dashboards.partner_trends(TODAY, program.timezone).top() == dashboards.top_partners(month)
    suspended = PartnerFactory()
    sale(db, program, suspended, TODAY, amount=50_000)
    assert dashboards.top_partners(month)[0].partner.id == suspended.id
    suspended.status = PartnerStatus.SUSPENDED  # sold while approved, suspended since
    db.session.flush()
    assert suspended.id not in [line.partner.id for line in dashboards.top_partners(month)]


def test_queues_count_what_waits_for_a_person(db, program):
    PartnerFactory(status=PartnerStatus.APPLIED)
    PartnerFactory(status=PartnerStatus.APPLIED)
    partner = PartnerFactory()
    tracking.record_conversion(
        program, tracking.ConversionInput("a", 500, "USD", customer_id="c", ref=partner.ref_code), {"a": 1}
    )
    tracking.record_conversion(
        program, tracking.ConversionInput("b", 500, "USD", customer_id="c", ref=partner.ref_code), {"b": 1}
    )
    db.session.add_all(
        [
            PayoutBatch(currency="USD", period_end=date(2026, 2, 15), cutoff_at=at_noon(TODAY)),
            PayoutBatch(
                currency="USD",
                period_end=date(2026, 1, 15),
                cutoff_at=at_noon(TODAY),
                status=BatchStatus.CLOSED,
            ),
        ]
    )
    # One link request waits for the team; a counter-offer waits for the partner, not the team.
    for status, counter in (("requested", {}), ("countered", {"counter_type": "percent"})):
        db.session.add(
            CampaignRequest(
                partner_id=partner.id,
                name=f"Spring {status}",
                landing_url="https://shop.example/spring",
                desired_percent_bp=1500,
                status=status,
                **counter,
                **({"counter_percent_bp": 1200} if counter else {}),
            )
        )
    db.session.flush()
    queues = dashboards.queues()
    counts = [(line.key, line.count) for line in queues.lines]
    assert counts == [("applications", 2), ("review", 1), ("link_requests", 1), ("batches", 1)]
    assert queues.total == 5
    assert queues.lines[2].endpoint == "admin.list_campaign_requests"
    assert queues.lines[1].endpoint_args == {"status": "review"}


def test_other_modules_add_their_queues(db, program, monkeypatch):
    monkeypatch.setattr(dashboards, "_QUEUES", dict(dashboards._QUEUES))
    dashboards.register_queue(
        dashboards.Queue("link-requests", "link requests to answer", lambda: 3, "admin.list_partners")
    )
    queues = dashboards.queues()
    assert queues.lines[-1].key == "link-requests" and queues.count("link-requests") == 3
    assert queues.total == 3


# --- exports and charts -----------------------------------------------------------------------


def test_csv_cells_from_people_cannot_become_formulas(db, program):
    partner = PartnerFactory(user__name="=HYPERLINK(1)")
    sale(db, program, partner, TODAY)
    headers, rows = dashboards.program_table(date_range("7d", TODAY), TODAY, "UTC", "top_partners", "USD")
    parsed = list(csv.reader(io.StringIO(dashboards.to_csv(headers, rows).removeprefix("\ufeff"))))
    assert parsed[0][:4] == ["Partner", "E-mail", "Partner code", "Clicks"]
    assert parsed[1][0] == "'=HYPERLINK(1)"
    assert parsed[1][parsed[0].index("Sales")] == "100.00"


def test_every_partner_table_exports(db, program):
    from portal.services import coupons

    partner = PartnerFactory()
    store_clicks(db, partner, TODAY, 2)
    sale(db, program, partner, TODAY)
    coupons.add_coupon(partner, "CODE10", None)
    sale(db, program, partner, TODAY, coupon="code10")
    rng = date_range("7d", TODAY)
    for name in dashboards.PARTNER_TABLES:
        headers, rows = dashboards.partner_table(partner.id, rng, name, "USD")
        assert headers and rows, name
    daily_headers, daily = dashboards.partner_table(partner.id, rng, "daily", "USD")
    assert len(daily) == 7
    assert daily[-1][[str(h) for h in daily_headers].index("Clicks")] == 2


@pytest.mark.parametrize(
    ("highest", "top"), [(0, 1), (1, 1), (3, 5), (7, 10), (11, 20), (21, 25), (2600, 5000)]
)
def test_chart_scales_end_on_round_numbers(highest, top):
    assert nice_top(highest) == top


def test_bars_are_proportional_and_small_days_still_show():
    chart = bar_chart([0, 1000, 1, -5])
    assert chart.top == 1000
    heights = [bar.height for bar in chart.bars]
    assert heights[0] == 0
    assert heights[1] == chart.height
    assert 0 < heights[2] < 2
    assert heights[3] == 0
    assert chart.bars[1].x > chart.bars[0].x


# --- the partner-trend cache ------------------------------------------------------------------


def _clicks_now(trends, partner) -> int:
    return next(t.clicks_now for t in trends.all if t.partner.id == partner.id)


def test_trends_are_recounted_only_for_partners_with_new_events_or_on_a_new_day(db, program):
    busy, calm = PartnerFactory(), PartnerFactory()
    store_clicks(db, busy, TODAY - timedelta(days=2), 3)
    store_clicks(db, calm, TODAY - timedelta(days=2), 4)
    first = dashboards.partner_trends(TODAY, program.timezone)
    assert (_clicks_now(first, busy), _clicks_now(first, calm)) == (3, 4)
    cached = {row.partner_id: row for row in db.session.scalars(sa.select(PartnerTrend))}
    assert cached[calm.id].as_of == TODAY and cached[calm.id].computed_version == cached[calm.id].version

    # Behind the cache's back (no event): the cached row is what the next read shows.
    db.session.execute(
        sa.update(PartnerDailyStat).where(PartnerDailyStat.partner_id == calm.id).values(clicks=40)
    )
    store_clicks(db, busy, TODAY, 2)  # an event: busy's row is stale now
    second = dashboards.partner_trends(TODAY, program.timezone)
    assert (_clicks_now(second, busy), _clicks_now(second, calm)) == (5, 4)
    # A new day: every row is recounted.
    third = dashboards.partner_trends(TODAY + timedelta(days=1), program.timezone)
    assert (_clicks_now(third, busy), _clicks_now(third, calm)) == (5, 40)


def test_a_recount_is_not_stored_when_an_event_came_in_between(db, program):
    partner = PartnerFactory()
    store_clicks(db, partner, TODAY, 1)
    read_version = db.session.scalar(
        sa.select(PartnerTrend.version).where(PartnerTrend.partner_id == partner.id)
    )
    store_clicks(db, partner, TODAY, 1)  # lands while the dashboard was counting
    stale_row = {"id": partner.id, "version": read_version}
    dashboards._remember([stale_row], {partner.id: (dashboards.Figures(clicks=1), 0, 0, TODAY)}, TODAY)
    row = db.session.scalars(sa.select(PartnerTrend).where(PartnerTrend.partner_id == partner.id)).one()
    db.session.refresh(row)
    assert row.computed_version is None  # not stored: the next read recounts
    assert _clicks_now(dashboards.partner_trends(TODAY, program.timezone), partner) == 2

"""Creative statistics: the figures, their definitions, date ranges, and whose numbers anyone sees."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from portal.models import Click, Role
from portal.services import creative_stats
from portal.services.creative_stats import Figures
from tests.creative_support import make_banner, make_text
from tests.factories import CommissionFactory, ConversionFactory, PartnerFactory, UserFactory

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
_ids = itertools.count(1)


@pytest.fixture
def operator(db):
    return UserFactory(role=Role.MANAGER)


@pytest.fixture
def ctx(app, db):
    with app.test_request_context():
        yield


def click(db, partner, creative, *, at=NOW, bot=False) -> Click:
    row = Click(
        id=f"c{next(_ids):031d}",
        partner_id=partner.id,
        code=partner.ref_code,
        channel="other",
        creative_id=creative.id if creative else None,
        destination_url="https://shop.example/",
        ip_hash="x" * 32,
        is_bot=bot,
        created_at=at,
    )
    db.session.add(row)
    return row


def sale(db, partner, clicked: Click, amount: int, commission: int, *, status="pending", refunded=0, at=NOW):
    conversion = ConversionFactory(
        transaction_id=f"t{next(_ids)}",
        amount_minor=amount,
        refunded_minor=refunded,
        partner=partner,
        click_id=clicked.id,
        status=status,
        rejection_reason="fraud_risk" if status == "rejected" else None,
        occurred_at=at,
    )
    CommissionFactory(
        conversion=conversion, amount_minor=commission, status="pending", at=at, confirm_after=at
    )
    return conversion


def period(first: date = date(2026, 11, 1), last: date = date(2026, 11, 30), tz: str = "UTC"):
    return creative_stats.date_range(first, last, tz, last)


def test_figures_and_their_definitions(ctx, db, operator, program):
    pat, sam = PartnerFactory(), PartnerFactory()
    banner = make_banner(operator, program, channels=("social", "ads"))
    text = make_text(operator, program, channels=("seo",))
    clicks = [click(db, pat, banner) for _ in range(7)] + [click(db, sam, banner) for _ in range(3)]
    click(db, pat, banner, bot=True)  # bots do not count
    click(db, pat, None)  # a click without a creative
    sale(db, pat, clicks[0], 10_000, 1_000)
    sale(db, pat, clicks[1], 5_000, 500, refunded=2_000)  # revenue net of the refund
    sale(db, sam, clicks[7], 4_000, 400)
    sale(db, pat, clicks[2], 9_999, 0, status="rejected")  # not counted
    sale(db, pat, clicks[3], 9_999, 999, status="review")  # held, not counted yet
    text_click = click(db, pat, text)
    sale(db, pat, text_click, 2_000, 200)

    report = creative_stats.creative_report(period())
    by_id = {row.creative.id: row.figures for row in report.rows}
    assert by_id[banner.id] == Figures(
        clicks=10, conversions=3, revenue_minor=17_000, earnings_minor=1_900, partners=2
    )
    assert by_id[banner.id].rate == Decimal("0.3")
    assert by_id[banner.id].epc_minor == 190
    assert by_id[text.id] == Figures(
        clicks=1, conversions=1, revenue_minor=2_000, earnings_minor=200, partners=1
    )

    # Per channel: the banner counts in both of its channels.
    assert report.channels["social"].clicks == report.channels["ads"].clicks == 10
    assert report.channels["seo"] == Figures(clicks=1, conversions=1, revenue_minor=2_000, earnings_minor=200)
    assert report.channels["email"] == Figures()
    assert report.total.clicks == 11


def test_a_partner_sees_only_their_own_numbers(ctx, db, operator, program):
    pat, sam = PartnerFactory(), PartnerFactory()
    banner = make_banner(operator, program)
    untouched = make_text(operator, program)
    pats = [click(db, pat, banner) for _ in range(4)]
    sams = [click(db, sam, banner) for _ in range(6)]
    sale(db, pat, pats[0], 1_000, 100)
    sale(db, sam, sams[0], 50_000, 5_000)

    report = creative_stats.creative_report(period(), partner_id=pat.id)
    assert [row.creative.id for row in report.rows] == [banner.id]  # what they used, nothing else
    assert report.rows[0].figures == Figures(
        clicks=4, conversions=1, revenue_minor=1_000, earnings_minor=100, partners=1
    )
    assert untouched.id not in {row.creative.id for row in report.rows}
    assert report.channels["social"].revenue_minor == 1_000


def test_date_range_is_whole_days_in_the_program_time_zone(ctx, db, operator, program):
    pat = PartnerFactory()
    banner = make_banner(operator, program)
    # 23:30 on 31 October in New York is already 1 November in UTC.
    click(db, pat, banner, at=datetime(2026, 11, 1, 3, 30, tzinfo=UTC))
    click(db, pat, banner, at=datetime(2026, 11, 1, 4, 30, tzinfo=UTC))  # 00:30 on 1 November there
    click(db, pat, banner, at=datetime(2026, 12, 1, 4, 59, tzinfo=UTC))  # 23:59 on 30 November there
    click(db, pat, banner, at=datetime(2026, 12, 1, 5, 0, tzinfo=UTC))  # 1 December there
    new_york = period(tz="America/New_York")
    assert (new_york.start, new_york.end) == (
        datetime(2026, 11, 1, 4, 0, tzinfo=UTC),
        datetime(2026, 12, 1, 5, 0, tzinfo=UTC),
    )

    def clicks(first, last, tz):
        rows = creative_stats.creative_report(period(first, last, tz)).rows
        return rows[0].figures.clicks if rows else 0

    first, last = date(2026, 11, 1), date(2026, 11, 30)
    assert clicks(first, first, "America/New_York") == 1
    assert clicks(first, first, "UTC") == 2
    assert clicks(last, last, "America/New_York") == 1
    assert clicks(last, last, "UTC") == 0


def test_default_range_is_the_last_thirty_days_and_odd_input_is_tamed():
    assert creative_stats.date_range(None, None, "UTC", date(2026, 11, 30)).first_day == date(2026, 11, 1)
    swapped = creative_stats.date_range(date(2026, 11, 30), date(2026, 11, 1), "UTC", date(2026, 12, 1))
    assert (swapped.first_day, swapped.last_day) == (date(2026, 11, 1), date(2026, 11, 30))
    extreme = creative_stats.date_range(
        date(1, 1, 1), date(9999, 12, 31), "Pacific/Kiritimati", date(2026, 1, 1)
    )
    assert extreme.start < extreme.end
    now = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)  # already 1 December in Berlin
    assert creative_stats.period(None, None, "Europe/Berlin", now).last_day == date(2026, 12, 1)


@pytest.mark.parametrize(
    ("sort", "descending", "expected"),
    [
        ("clicks", True, ["Busy", "Converting", "Quiet"]),
        ("rate", True, ["Converting", "Busy", "Quiet"]),
        ("epc", True, ["Converting", "Busy", "Quiet"]),
        ("name", False, ["Busy", "Converting", "Quiet"]),
        ("revenue", False, ["Quiet", "Busy", "Converting"]),
        ("bogus", True, ["Busy", "Converting", "Quiet"]),
    ],
)
def test_operator_report_sorts(ctx, db, operator, program, sort, descending, expected):
    pat = PartnerFactory()
    busy = make_text(operator, program, name="Busy")
    converting = make_text(operator, program, name="Converting")
    make_text(operator, program, name="Quiet")
    busy_clicks = [click(db, pat, busy) for _ in range(10)]
    converting_clicks = [click(db, pat, converting) for _ in range(2)]
    sale(db, pat, busy_clicks[0], 1_000, 100)
    sale(db, pat, converting_clicks[0], 3_000, 300)
    report = creative_stats.creative_report(period(), sort=sort, descending=descending)
    assert [row.creative.name for row in report.rows] == expected


def test_best_across_the_program_needs_enough_partners_and_clicks(ctx, db, operator, program):
    partners = [PartnerFactory() for _ in range(3)]
    strong = make_banner(operator, program, name="Strong", channels=("social",))
    weak = make_text(operator, program, name="Weak", channels=("social", "seo"))
    lonely = make_text(operator, program, name="One partner's", channels=("social",))
    for index in range(24):
        partner = partners[index % 3]
        strong_click = click(db, partner, strong)
        weak_click = click(db, partner, weak)
        if index % 4 == 0:
            sale(db, partner, strong_click, 2_000, 200)
        if index == 0:
            sale(db, partner, weak_click, 2_000, 200)
    # Converts wonderfully, but every click is one partner's: never shown to others.
    for _ in range(30):
        sale(db, partners[0], click(db, partners[0], lonely), 1_000, 100)

    best = creative_stats.best_in_channels(period(), ["social", "seo", "video"])
    assert [row.creative.name for row in best["social"]] == ["Strong", "Weak"]
    assert [row.creative.name for row in best["seo"]] == ["Weak"]
    assert best["video"] == []
    assert best["social"][0].figures.clicks == 24
    assert best["social"][0].figures.rate == Decimal(6) / 24


def test_best_list_leaves_out_creatives_no_longer_published(ctx, db, operator, program):
    from portal.services.creatives import set_creative_status

    partners = [PartnerFactory() for _ in range(3)]
    gone = make_text(operator, program, name="Gone", channels=("social",))
    for index in range(21):
        click(db, partners[index % 3], gone)
    assert [r.creative.name for r in creative_stats.best_in_channels(period(), ["social"])["social"]] == [
        "Gone"
    ]
    set_creative_status(gone, operator, "archive")
    assert creative_stats.best_in_channels(period(), ["social"])["social"] == []


def test_empty_figures_have_no_rate(ctx):
    assert Figures().rate is None
    assert Figures().epc_minor is None
    assert Figures(clicks=3, earnings_minor=100).epc_minor == 33
    assert Figures(clicks=2, earnings_minor=1).epc_minor == 1  # half a cent rounds up

"""How creatives perform: clicks, conversions, conversion rate, earnings per click and revenue,
per creative and per channel, over a date range.

Definitions, the same for operators and partners:

* a click is a click on a link carrying ``?creative=<id>``, bots excluded;
* a conversion is a counted sale (not rejected, not held for review) whose click carried the creative;
* revenue is those sales net of refunds; earnings are the partners' net commission on them;
* conversion rate = conversions / clicks; earnings per click (EPC) = earnings / clicks.

Clicks count in the range by when they happened, sales by when they were made. A
creative filed under several channels counts in each of its channels.

Partners get their own figures, and for their channels the program-wide figures of
the creatives that convert best — only when enough partners stand behind them that
no single other partner's numbers can be read off them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from portal.extensions import db
from portal.models import (
    CHANNELS,
    Click,
    Commission,
    Conversion,
    ConversionStatus,
    Creative,
    CreativeStatus,
)
from portal.models.types import utcnow

# "Best across the program" lists only creatives with at least this many clicks from at least
# this many different partners: fewer, and the program figure would be one partner's figure.
MIN_PROGRAM_CLICKS = 20
MIN_PROGRAM_PARTNERS = 3
BEST_PER_CHANNEL = 5
_EARLIEST, _LATEST = date(1970, 1, 1), date(9999, 12, 30)
SORT_KEYS = ("name", "clicks", "conversions", "rate", "epc", "revenue", "earnings")


@dataclass
class Figures:
    clicks: int = 0
    conversions: int = 0
    revenue_minor: int = 0
    earnings_minor: int = 0
    partners: int = 0

    @property
    def rate(self) -> Decimal | None:
        """Conversions per click, as a fraction (0.05 = 5 %)."""
        return Decimal(self.conversions) / self.clicks if self.clicks else None

    @property
    def epc_minor(self) -> int | None:
        """Earnings per click in minor units, rounded half up."""
        if not self.clicks:
            return None
        return (2 * self.earnings_minor + self.clicks) // (2 * self.clicks)

    def add(self, other: Figures) -> None:
        self.clicks += other.clicks
        self.conversions += other.conversions
        self.revenue_minor += other.revenue_minor
        self.earnings_minor += other.earnings_minor


@dataclass
class CreativeRow:
    creative: Creative
    figures: Figures


@dataclass
class Report:
    start: datetime
    end: datetime
    rows: list[CreativeRow]
    channels: dict[str, Figures]
    total: Figures = field(default_factory=Figures)


@dataclass
class DateRange:
    first_day: date
    last_day: date
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive


def date_range(
    first_day: date | None, last_day: date | None, tz: str, today: date, days: int = 30
) -> DateRange:
    """Whole days in the program's time zone, as a UTC interval; the last 30 days by default."""
    last_day = min(last_day or today, _LATEST)
    first_day = max(first_day or last_day - timedelta(days=days - 1), _EARLIEST)
    if first_day > last_day:
        first_day, last_day = last_day, first_day
    zone = ZoneInfo(tz)
    start = datetime.combine(first_day, time.min, zone).astimezone(ZoneInfo("UTC"))
    end = datetime.combine(last_day + timedelta(days=1), time.min, zone).astimezone(ZoneInfo("UTC"))
    return DateRange(first_day, last_day, start, end)


def period(first_day: date | None, last_day: date | None, tz: str, now: datetime | None = None) -> DateRange:
    """The range asked for, defaulting to the 30 days up to today in ``tz``."""
    today = (now or utcnow()).astimezone(ZoneInfo(tz)).date()
    return date_range(first_day, last_day, tz, today)


def figures_by_creative(start: datetime, end: datetime, partner_id: int | None = None) -> dict[int, Figures]:
    """Figures per creative id; one partner's own when ``partner_id`` is given, else the program's."""
    figures: dict[int, Figures] = {}

    def entry(creative_id: int) -> Figures:
        return figures.setdefault(creative_id, Figures())

    clicks = sa.select(
        Click.creative_id, sa.func.count(), sa.func.count(sa.distinct(Click.partner_id))
    ).where(
        Click.creative_id.is_not(None),
        Click.is_bot.is_(False),
        Click.created_at >= start,
        Click.created_at < end,
    )
    counted = sa.and_(
        Conversion.status.not_in([ConversionStatus.REJECTED, ConversionStatus.REVIEW]),
        Conversion.occurred_at >= start,
        Conversion.occurred_at < end,
        Click.creative_id.is_not(None),
    )
    sales = (
        sa.select(
            Click.creative_id,
            sa.func.count(Conversion.id),
            sa.func.coalesce(sa.func.sum(Conversion.amount_minor - Conversion.refunded_minor), 0),
        )
        .select_from(Conversion)
        .join(Click, Click.id == Conversion.click_id)
        .where(counted)
    )
    earnings = (
        sa.select(Click.creative_id, sa.func.coalesce(sa.func.sum(Commission.amount_minor), 0))
        .select_from(Commission)
        .join(Conversion, Conversion.id == Commission.conversion_id)
        .join(Click, Click.id == Conversion.click_id)
        .where(counted)
    )
    if partner_id is not None:
        clicks = clicks.where(Click.partner_id == partner_id)
        sales = sales.where(Conversion.partner_id == partner_id)
        earnings = earnings.where(Commission.partner_id == partner_id)

    for creative_id, count, partners in db.session.execute(clicks.group_by(Click.creative_id)):
        entry(creative_id).clicks = count
        entry(creative_id).partners = partners
    for creative_id, count, revenue in db.session.execute(sales.group_by(Click.creative_id)):
        entry(creative_id).conversions = count
        entry(creative_id).revenue_minor = int(revenue)
    for creative_id, amount in db.session.execute(earnings.group_by(Click.creative_id)):
        entry(creative_id).earnings_minor = int(amount)
    return figures


def _sort_key(key: str):
    def value(row: CreativeRow):
        f = row.figures
        return {
            "name": row.creative.name.lower(),
            "clicks": f.clicks,
            "conversions": f.conversions,
            "rate": f.rate if f.rate is not None else Decimal(-1),
            "epc": f.epc_minor if f.epc_minor is not None else -1,
            "revenue": f.revenue_minor,
            "earnings": f.earnings_minor,
        }[key]

    return value


def creative_report(
    period: DateRange,
    *,
    partner_id: int | None = None,
    sort: str = "clicks",
    descending: bool = True,
    published_only: bool = False,
) -> Report:
    """Per creative and per channel: every creative (operators) or the ones a partner used."""
    figures = figures_by_creative(period.start, period.end, partner_id)
    query = sa.select(Creative)
    if partner_id is not None:
        # A partner's report lists what they used (and may since have been archived).
        query = query.where(Creative.id.in_(list(figures)) if figures else sa.false())
    elif published_only:
        query = query.where(Creative.status == CreativeStatus.PUBLISHED)
    creatives = db.session.scalars(query).unique().all()
    rows = [CreativeRow(c, figures.get(c.id, Figures())) for c in creatives]
    key = sort if sort in SORT_KEYS else "clicks"
    rows.sort(key=lambda r: r.creative.id)
    rows.sort(key=_sort_key(key), reverse=descending)

    channels = {c: Figures() for c in CHANNELS}
    total = Figures()
    for row in rows:
        total.add(row.figures)
        for channel in row.creative.channels:
            if channel in channels:
                channels[channel].add(row.figures)
    return Report(period.start, period.end, rows, channels, total)


def best_in_channels(period: DateRange, channels: list[str]) -> dict[str, list[CreativeRow]]:
    """For each channel, the published creatives that convert best across the whole program.

    Program-wide totals only, and only for creatives used by at least MIN_PROGRAM_PARTNERS
    partners with at least MIN_PROGRAM_CLICKS clicks, so no other partner's figures show.
    """
    figures = figures_by_creative(period.start, period.end)
    eligible = {
        creative_id: f
        for creative_id, f in figures.items()
        if f.clicks >= MIN_PROGRAM_CLICKS and f.partners >= MIN_PROGRAM_PARTNERS
    }
    if not eligible:
        return {channel: [] for channel in channels}
    creatives = db.session.scalars(
        sa.select(Creative).where(
            Creative.id.in_(list(eligible)), Creative.status == CreativeStatus.PUBLISHED
        )
    ).unique()
    rows = [CreativeRow(c, eligible[c.id]) for c in creatives]
    rows.sort(
        key=lambda r: (r.figures.rate, r.figures.epc_minor, r.figures.clicks, -r.creative.id), reverse=True
    )
    return {
        channel: [r for r in rows if channel in r.creative.channels][:BEST_PER_CHANNEL]
        for channel in channels
    }

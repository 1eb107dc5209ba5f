"""Dashboard figures for partners and operators, read from the rollups only.

Every query here reads the days of the chosen range (or the last 60 days for the
trend lists), a fixed number of recent rows through an index, or one row per
partner — never the history behind them, so a page costs the same after years.
Partner functions take the partner's id and read nothing else.

Why it is long: the partner and operator dashboards and their CSV exports read the
same rollup tables through the same ranges, grains and breakdowns, so a figure on a
page and in its CSV cannot drift apart. The operators' trends and work queues
(``partner_trends`` to ``queues``) are the first to move out when this grows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache

import sqlalchemy as sa
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext

from portal import csvfile
from portal.database import dialect_insert
from portal.extensions import db
from portal.models import (
    COUNTERS,
    BatchStatus,
    CampaignRequest,
    Click,
    Conversion,
    ConversionStatus,
    Creative,
    CreativeDailyStat,
    DailyStat,
    Link,
    Partner,
    PartnerDailyStat,
    PartnerStatus,
    PartnerTrend,
    PayoutBatch,
    ProgramDailyStat,
    RequestStatus,
    Signup,
    User,
)
from portal.money import to_decimal_string

log = logging.getLogger(__name__)

# --- ranges ----------------------------------------------------------------------------

RANGES = ("7d", "30d", "90d", "this_month", "last_month", "custom")
DEFAULT_RANGE = "30d"
MAX_RANGE_DAYS = 731
_LAST_N_DAYS = {"7d": 7, "30d": 30, "90d": 90}


def range_label(preset: str) -> str:
    return {
        "7d": _("Last 7 days"),
        "30d": _("Last 30 days"),
        "90d": _("Last 90 days"),
        "this_month": _("This month"),
        "last_month": _("Last month"),
        "custom": _("Custom dates"),
    }[preset]


@dataclass(frozen=True)
class DateRange:
    """Calendar days in the program's time zone, both ends included."""

    start: date
    end: date
    preset: str = DEFAULT_RANGE

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def query_args(self) -> dict[str, str]:
        """The URL arguments that select this range again (fragments, CSV links)."""
        if self.preset == "custom":
            return {"range": "custom", "start": self.start.isoformat(), "end": self.end.isoformat()}
        return {"range": self.preset}


def date_range(preset: str, today: date, start: date | None = None, end: date | None = None) -> DateRange:
    """The range a preset means on ``today``; ``custom`` takes ``start`` and ``end`` as given."""
    if preset in _LAST_N_DAYS:
        return DateRange(today - timedelta(days=_LAST_N_DAYS[preset] - 1), today, preset)
    if preset == "this_month":
        return DateRange(today.replace(day=1), today, preset)
    if preset == "last_month":
        last = today.replace(day=1) - timedelta(days=1)
        return DateRange(last.replace(day=1), last, preset)
    if preset == "custom" and start is not None and end is not None:
        return DateRange(start, end, preset)
    raise ValueError(f"unknown range {preset!r}")


# --- figures ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figures:
    """The counters of a set of rollup rows, summed, and what follows from them."""

    clicks: int = 0
    unique_clicks: int = 0
    bot_clicks: int = 0
    signups: int = 0
    conversions: int = 0
    conversions_review: int = 0
    conversions_rejected: int = 0
    sales_minor: int = 0
    commission_minor: int = 0

    @classmethod
    def of(cls, row) -> Figures:
        return cls(*(int(row[name] or 0) for name in COUNTERS))

    def __add__(self, other: Figures) -> Figures:
        return Figures(**{name: getattr(self, name) + getattr(other, name) for name in COUNTERS})

    @property
    def counted(self) -> int:
        """Conversions that count: not rejected (those in review included)."""
        return self.conversions - self.conversions_rejected

    @property
    def conversion_rate(self) -> Decimal | None:
        """Counted conversions per click (bots excluded); None without clicks."""
        return Decimal(self.counted) / self.clicks if self.clicks else None

    @property
    def epc_minor(self) -> int | None:
        """Earnings per click in minor units, rounded half up; None without clicks."""
        if not self.clicks:
            return None
        return (2 * self.commission_minor + self.clicks) // (2 * self.clicks)


@lru_cache(maxsize=8)
def _sums(table) -> tuple:
    # Built once per table: the expressions are immutable and every query reuses them.
    return tuple(sa.func.coalesce(sa.func.sum(table.c[name]), 0).label(name) for name in COUNTERS)


def _in_range(column, rng: DateRange):
    return column.between(rng.start, rng.end)


def _figures(table, *where) -> Figures:
    row = db.session.execute(sa.select(*_sums(table)).where(*where)).mappings().one()
    return Figures.of(row)


# --- series (the chart) ----------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    start: date
    end: date
    figures: Figures


@dataclass(frozen=True)
class Series:
    grain: str  # "day", "week" or "month"
    buckets: list[Bucket]

    @property
    def total(self) -> Figures:
        """The whole range: the buckets cover it exactly, once."""
        total = Figures()
        for bucket in self.buckets:
            total = total + bucket.figures
        return total

    def values(self, metric: str) -> list[int]:
        return [getattr(bucket.figures, metric) for bucket in self.buckets]


def grain_for(rng: DateRange) -> str:
    """Days up to two months, then weeks up to a year, then months: bars stay readable."""
    if rng.days <= 62:
        return "day"
    return "week" if rng.days <= 366 else "month"


def _bucket_start(day: date, grain: str) -> date:
    if grain == "week":
        return day - timedelta(days=day.weekday())
    if grain == "month":
        return day.replace(day=1)
    return day


def _next_bucket(start: date, grain: str) -> date:
    if grain == "week":
        return start + timedelta(days=7)
    if grain == "month":
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return start + timedelta(days=1)


def _series(table, rng: DateRange, *where) -> Series:
    rows = db.session.execute(
        sa.select(table.c.day, *_sums(table)).where(_in_range(table.c.day, rng), *where).group_by(table.c.day)
    ).mappings()
    grain = grain_for(rng)
    by_start: dict[date, Figures] = {}
    for row in rows:
        start = _bucket_start(row["day"], grain)
        by_start[start] = by_start.get(start, Figures()) + Figures.of(row)
    buckets = []
    start = _bucket_start(rng.start, grain)
    while start <= rng.end:
        following = _next_bucket(start, grain)
        buckets.append(
            Bucket(
                max(start, rng.start),
                min(following - timedelta(days=1), rng.end),
                by_start.get(start, Figures()),
            )
        )
        start = following
    return Series(grain, buckets)


# --- breakdowns ------------------------------------------------------------------------

DIMENSIONS = ("channel", "campaign", "link", "creative", "sub_id", "coupon")


@dataclass(frozen=True)
class Row:
    """One line of a breakdown or leaderboard: what it is, and its figures."""

    key: str
    label: str
    figures: Figures
    code: str | None = None  # links: the /go/ code
    link_id: int | None = None


def dimension_label(dimension: str) -> str:
    return {
        "channel": _("Channel"),
        "campaign": _("Campaign"),
        "link": _("Link"),
        "creative": _("Creative"),
        "sub_id": _("Sub-ID"),
        "coupon": _("Coupon code"),
    }[dimension]


def _channel_label(code: str) -> str:
    if not code:
        return _("No click (ref code or returning customer)")
    from portal.formatting import channel_label

    return channel_label(code)


def _none_label(value: str | int) -> str:
    return str(value) if value else _("(none)")


def _creative_label(creative_id: int, name: str | None = None) -> str:
    if not creative_id:
        return _("(none)")
    if name is None:  # a ?creative= number that is not (or no longer) in the library
        return _("Creative #%(id)s (not in the library)", id=creative_id)
    return name


def _creative_rows(grouped: sa.Select) -> list[Row]:
    """Rows of a query grouped by ``creative_id``, named after the library's creatives (one join)."""
    sums = grouped.subquery()
    rows = db.session.execute(
        sa.select(sums, Creative.name.label("creative_name")).outerjoin(
            Creative, Creative.id == sums.c.creative_id
        )
    ).mappings()
    return [
        Row(
            str(row["creative_id"]),
            _creative_label(row["creative_id"], row["creative_name"]),
            Figures.of(row),
        )
        for row in rows
    ]


def _order(rows: list[Row]) -> list[Row]:
    return sorted(
        rows, key=lambda r: (-r.figures.clicks, -r.figures.counted, -r.figures.sales_minor, r.label)
    )


def partner_breakdown(partner_id: int, rng: DateRange, dimension: str) -> list[Row]:
    """The partner's figures in the range by one dimension, busiest first."""
    if dimension == "coupon":
        return _coupon_rows(partner_id, rng)
    table = DailyStat.__table__
    where = (table.c.partner_id == partner_id, _in_range(table.c.day, rng))
    if dimension == "link":
        rows = db.session.execute(
            sa.select(table.c.link_id, table.c.code, *_sums(table))
            .where(*where)
            .group_by(table.c.link_id, table.c.code)
        ).mappings()
        by_link: dict[tuple[int, str], Figures] = {}
        for row in rows:
            # A link's code can change (custom codes); it stays one link.
            key = (row["link_id"], "" if row["link_id"] else row["code"])
            by_link[key] = by_link.get(key, Figures()) + Figures.of(row)
        links = {
            link.id: link
            for link in db.session.scalars(
                sa.select(Link).where(
                    Link.partner_id == partner_id, Link.id.in_([k[0] for k in by_link if k[0]])
                )
            )
        }
        result = []
        for (link_id, code), figures in by_link.items():
            link = links.get(link_id)
            if link is not None:
                result.append(Row(str(link_id), link.label, figures, link.code, link_id))
            elif code:
                result.append(Row(f"code:{code}", _("Your partner-code link"), figures, code))
            else:
                result.append(Row("", _("No click (ref code or returning customer)"), figures))
        return _order(result)
    if dimension == "creative":
        return _order(
            _creative_rows(
                sa.select(table.c.creative_id, *_sums(table)).where(*where).group_by(table.c.creative_id)
            )
        )
    column = {
        "channel": table.c.channel,
        "campaign": table.c.campaign,
        "sub_id": table.c.sub_id,
    }[dimension]
    label = {
        "channel": _channel_label,
        "campaign": _none_label,
        "sub_id": _none_label,
    }[dimension]
    rows = db.session.execute(sa.select(column.label("key"), *_sums(table)).where(*where).group_by(column))
    return _order([Row(str(row.key), label(row.key), Figures.of(row._mapping)) for row in rows])


def _coupon_rows(partner_id: int | None, rng: DateRange) -> list[Row]:
    """By coupon code: sales and signups the partner's codes brought (no clicks: a code is
    typed, not clicked), counted on the days they occurred in the program's time zone."""
    from zoneinfo import ZoneInfo

    from portal.services import coupons
    from portal.services.program import get_program

    zone = ZoneInfo(get_program().timezone)
    try:
        after_end = rng.end + timedelta(days=1)
    except OverflowError:  # 9999-12-31
        after_end = None
    start, end = _instant(rng.start, zone), _instant(after_end, zone) if after_end else None
    if partner_id is None:
        rows = [
            Row(code, f"{code} ({ref})", _coupon_figures_of(f), code=None)
            for code, ref, f in coupons.program_coupon_figures(start, end)
        ]
        return sorted(rows, key=lambda r: (-r.figures.sales_minor, -r.figures.counted, r.label))
    figures = coupons.partner_coupon_figures(partner_id, start, end)
    return _order([Row(code, code, _coupon_figures_of(f)) for code, f in figures.items()])


def _instant(day: date, zone) -> datetime | None:
    """The UTC instant ``day`` starts in ``zone``; None (no bound) at the ends of the calendar."""
    try:
        return datetime.combine(day, datetime.min.time(), tzinfo=zone).astimezone(UTC)
    except OverflowError:
        return None


def _coupon_figures_of(f) -> Figures:
    return Figures(
        signups=f.signups,
        conversions=f.conversions,
        conversions_review=f.conversions_review,
        conversions_rejected=f.conversions_rejected,
        sales_minor=f.sales_minor,
        commission_minor=f.commission_minor,
    )


def coupon_leaderboard(rng: DateRange) -> list[Row]:
    """Every code's figures in the range, best selling first (the operators' dashboard)."""
    return _coupon_rows(None, rng)


# --- recent activity -------------------------------------------------------------------

ACTIVITY_ROWS = 12


@dataclass(frozen=True)
class Activity:
    kind: str  # "click", "signup" or "conversion"
    at: datetime
    label: str = ""  # the link (clicks, signups) or the order id (conversions)
    channel: str = ""
    sub_id: str = ""
    amount_minor: int = 0
    currency: str = ""
    status: str = ""
    conversion_id: int | None = None
    unique: bool = True
    # False for a sale in another currency still waiting for its rate: the amount is what was
    # sent, in its own currency (nothing in the program's yet).
    converted: bool = True


def recent_activity(partner_id: int, limit: int = ACTIVITY_ROWS) -> list[Activity]:
    """The partner's latest clicks, signups and conversions, newest first (three index reads)."""
    clicks = db.session.execute(
        sa.select(Click.created_at, Click.code, Click.channel, Click.sub_id, Click.is_unique, Link.label)
        .outerjoin(Link, Link.id == Click.link_id)
        .where(Click.partner_id == partner_id, Click.is_bot.is_(False))
        .order_by(Click.created_at.desc())
        .limit(limit)
    )
    signups = db.session.execute(
        sa.select(Signup.occurred_at, Click.code, Link.label)
        .outerjoin(Click, Click.id == Signup.click_id)
        .outerjoin(Link, Link.id == Click.link_id)
        .where(Signup.partner_id == partner_id)
        .order_by(Signup.occurred_at.desc())
        .limit(limit)
    )
    conversions = db.session.execute(
        sa.select(
            Conversion.id,
            Conversion.occurred_at,
            Conversion.transaction_id,
            Conversion.amount_minor,
            Conversion.refunded_minor,
            Conversion.currency,
            Conversion.status,
            Conversion.original_amount_minor,
            Conversion.original_refunded_minor,
            Conversion.original_currency,
            Conversion.fx_rate,
        )
        .where(Conversion.partner_id == partner_id)
        .order_by(Conversion.occurred_at.desc(), Conversion.id.desc())
        .limit(limit)
    )
    items = [
        Activity(
            "click",
            row.created_at,
            row.label or row.code,
            row.channel,
            row.sub_id or "",
            unique=row.is_unique,
        )
        for row in clicks
    ]
    items += [
        Activity("signup", row.occurred_at, row.label or row.code or _("your partner code"))
        for row in signups
    ]
    items += [_sale_activity(row) for row in conversions]
    return sorted(items, key=lambda a: a.at, reverse=True)[:limit]


def _sale_activity(row) -> Activity:
    waiting = row.original_currency is not None and row.fx_rate is None
    if waiting:
        amount, currency = row.original_amount_minor - row.original_refunded_minor, row.original_currency
    else:
        amount, currency = row.amount_minor - row.refunded_minor, row.currency
    return Activity(
        "conversion",
        row.occurred_at,
        row.transaction_id,
        amount_minor=amount,
        currency=currency,
        status=row.status,
        conversion_id=row.id,
        converted=not waiting,
    )


# --- the partner's dashboard -----------------------------------------------------------


def partner_figures(partner_id: int, rng: DateRange) -> Figures:
    table = PartnerDailyStat.__table__
    return _figures(table, table.c.partner_id == partner_id, _in_range(table.c.day, rng))


def partner_series(partner_id: int, rng: DateRange) -> Series:
    table = PartnerDailyStat.__table__
    return _series(table, rng, table.c.partner_id == partner_id)


@dataclass
class PartnerDashboard:
    range: DateRange
    figures: Figures
    series: Series
    breakdowns: dict[str, list[Row]]
    activity: list[Activity]


def partner_dashboard(partner_id: int, rng: DateRange) -> PartnerDashboard:
    series = partner_series(partner_id, rng)
    return PartnerDashboard(
        range=rng,
        figures=series.total,
        series=series,
        breakdowns={dimension: partner_breakdown(partner_id, rng, dimension) for dimension in DIMENSIONS},
        activity=recent_activity(partner_id),
    )


# --- the operators' dashboard ----------------------------------------------------------

LEADERBOARD_ROWS = 10
TREND_DAYS = 30
QUIET_DAYS = 21


def program_figures(rng: DateRange) -> Figures:
    table = ProgramDailyStat.__table__
    return _figures(table, _in_range(table.c.day, rng))


def program_series(rng: DateRange) -> Series:
    return _series(ProgramDailyStat.__table__, rng)


def channel_leaderboard(rng: DateRange) -> list[Row]:
    table = ProgramDailyStat.__table__
    rows = db.session.execute(
        sa.select(table.c.channel, *_sums(table)).where(_in_range(table.c.day, rng)).group_by(table.c.channel)
    ).mappings()
    result = [Row(row["channel"], _channel_label(row["channel"]), Figures.of(row)) for row in rows]
    return sorted(result, key=lambda r: (-r.figures.sales_minor, -r.figures.counted, -r.figures.clicks))


def creative_leaderboard(rng: DateRange, limit: int | None = LEADERBOARD_ROWS) -> list[Row]:
    """Creatives by counted conversions, then clicks (clicks without a creative left out)."""
    table = CreativeDailyStat.__table__
    result = _creative_rows(
        sa.select(table.c.creative_id, *_sums(table))
        .where(_in_range(table.c.day, rng), table.c.creative_id != 0)
        .group_by(table.c.creative_id)
    )
    result.sort(key=lambda r: (-r.figures.counted, -r.figures.clicks, -r.figures.sales_minor, r.key))
    return result[:limit] if limit else result


@dataclass(frozen=True)
class PartnerRef:
    id: int
    name: str
    email: str
    ref_code: str


@dataclass(frozen=True)
class PartnerLine:
    partner: PartnerRef
    figures: Figures


def _ranked(lines: Iterable[PartnerLine], limit: int | None) -> list[PartnerLine]:
    ranked = sorted(
        (line for line in lines if any(getattr(line.figures, name) for name in COUNTERS)),
        key=lambda line: (
            -line.figures.sales_minor,
            -line.figures.counted,
            -line.figures.clicks,
            line.partner.id,
        ),
    )
    return ranked[:limit] if limit else ranked


def top_partners(rng: DateRange, limit: int | None = LEADERBOARD_ROWS) -> list[PartnerLine]:
    """Approved partners by sales in the range, then counted conversions, then clicks."""
    table = PartnerDailyStat.__table__
    sums = (
        sa.select(table.c.partner_id, *_sums(table))
        .where(_in_range(table.c.day, rng))
        .group_by(table.c.partner_id)
        .subquery()
    )
    rows = db.session.execute(
        sa.select(Partner.id, User.name, User.email, Partner.ref_code, *(sums.c[name] for name in COUNTERS))
        .join(User, User.id == Partner.user_id)
        .join(sums, sums.c.partner_id == Partner.id)
        .where(Partner.status == PartnerStatus.APPROVED)
    ).mappings()
    lines = (
        PartnerLine(PartnerRef(row["id"], row["name"], row["email"], row["ref_code"]), Figures.of(row))
        for row in rows
    )
    return _ranked(lines, limit)


@dataclass(slots=True)
class Trend:
    """One approved partner's last 30 days against the 30 before."""

    partner: PartnerRef
    now: Figures  # the last 30 days, in full
    clicks_now: int
    clicks_before: int
    conversions_now: int
    conversions_before: int
    last_click: date | None
    approved_on: date | None
    reasons: tuple[str, ...] = ()

    @property
    def click_change(self) -> int:
        return self.clicks_now - self.clicks_before

    @property
    def conversion_change(self) -> int:
        return self.conversions_now - self.conversions_before


def risk_label(reason: str) -> str:
    return {
        "clicks_halved": _("clicks fell by half or more"),
        "conversions_halved": _("conversions fell by half or more"),
        "quiet": _("no click in %(days)d days", days=QUIET_DAYS),
        "never_clicked": _("no click since approval"),
    }[reason]


def _risk_reasons(
    clicks_now: int,
    clicks_before: int,
    conversions_now: int,
    conversions_before: int,
    last_click: date | None,
    approved_on: date | None,
    today: date,
) -> tuple[str, ...]:
    reasons = []
    if clicks_before > 0 and 2 * clicks_now <= clicks_before:
        reasons.append("clicks_halved")
    if conversions_before > 0 and 2 * conversions_now <= conversions_before:
        reasons.append("conversions_halved")
    quiet_since = today - timedelta(days=QUIET_DAYS)  # the last click was on or before this day
    if last_click is not None and last_click <= quiet_since:
        reasons.append("quiet")
    elif last_click is None and approved_on is not None and approved_on <= quiet_since:
        reasons.append("never_clicked")
    return tuple(reasons)


@dataclass
class Trends:
    """Every approved partner that rose, fell or is at risk; the page shows the first few."""

    window: DateRange  # the last 30 days
    rising: list[Trend]  # most gained first
    falling: list[Trend]  # most lost first
    at_risk: list[Trend]  # most valuable first
    all: list[Trend]

    def top(self, limit: int | None = LEADERBOARD_ROWS) -> list[PartnerLine]:
        """Top partners of the last 30 days, from the same pass (``top_partners`` for that range)."""
        return _ranked((PartnerLine(t.partner, t.now) for t in self.all), limit)


def partner_trends(today: date, timezone: str) -> Trends:
    """Rising, falling and at-risk approved partners: the last 30 days against the 30 before.

    At risk: clicks or counted conversions fell by half or more, or no click in 21 days
    (or none since approval, 21 days ago or more).

    One row per partner from the ``PartnerTrend`` cache; only partners with events since
    their row was computed (or all, on the first read of a day) are recounted from their
    last 60 partner-days, and stored again. The caller commits to keep what was stored.
    """
    from portal.services.rollups import local_day

    window = DateRange(today - timedelta(days=TREND_DAYS - 1), today, "30d")
    cached = PartnerTrend.__table__
    rows = (
        db.session.execute(
            sa.select(
                Partner.id,
                User.name,
                User.email,
                Partner.ref_code,
                Partner.status_changed_at,
                cached.c.version,
                cached.c.computed_version,
                cached.c.as_of,
                cached.c.clicks_before,
                cached.c.conversions_before,
                cached.c.last_click,
                *(cached.c[name] for name in COUNTERS),
            )
            .join(User, User.id == Partner.user_id)
            .outerjoin(cached, cached.c.partner_id == Partner.id)
            .where(Partner.status == PartnerStatus.APPROVED)
        )
        .mappings()
        .all()
    )
    stale = [
        row
        for row in rows
        if row["as_of"] != today
        or row["computed_version"] is None
        or row["computed_version"] != row["version"]
    ]
    recounted = _windows([row["id"] for row in stale], window, everyone=len(stale) == len(rows))
    _remember(stale, recounted, today)
    trends = []
    for row in rows:
        if row["id"] in recounted:
            now, clicks_before, conversions_before, last_click = recounted[row["id"]]
        else:
            now = Figures.of(row)
            clicks_before, conversions_before, last_click = (
                row["clicks_before"],
                row["conversions_before"],
                row["last_click"],
            )
        approved_on = None
        if last_click is None and row["status_changed_at"] is not None:
            approved_on = local_day(row["status_changed_at"], timezone)
        numbers = (now.clicks, clicks_before, now.counted, conversions_before)
        trends.append(
            Trend(
                PartnerRef(row["id"], row["name"], row["email"], row["ref_code"]),
                now,
                *numbers,
                last_click=last_click,
                approved_on=approved_on,
                reasons=_risk_reasons(*numbers, last_click, approved_on, today),
            )
        )

    def change(t: Trend) -> tuple[int, int]:
        return t.conversion_change, t.click_change

    rising = sorted(
        (t for t in trends if change(t) > (0, 0)),
        key=lambda t: (-t.conversion_change, -t.click_change, t.partner.id),
    )
    falling = sorted((t for t in trends if change(t) < (0, 0)), key=lambda t: (*change(t), t.partner.id))
    at_risk = sorted(
        (t for t in trends if t.reasons),
        key=lambda t: (-t.conversions_before, -t.clicks_before, t.last_click or date.min, t.partner.id),
    )
    return Trends(window, rising, falling, at_risk, trends)


Window = tuple[Figures, int, int, date | None]  # last 30 days, clicks and conversions before, last click


def _windows(partner_ids: list[int], window: DateRange, everyone: bool) -> dict[int, Window]:
    """Recount the partners' two 30-day windows from their partner-days: one pass, plain sums."""
    if not partner_ids:
        return {}
    table = PartnerDailyStat.__table__
    before_start = window.start - timedelta(days=TREND_DAYS)
    is_now = (table.c.day >= window.start).label("is_now")
    query = (
        sa.select(
            table.c.partner_id,
            is_now,
            *_sums(table),
            sa.func.max(sa.case((table.c.clicks > 0, table.c.day))).label("last_click"),
        )
        .where(table.c.day.between(before_start, window.end))
        .group_by(table.c.partner_id, is_now)
    )
    if not everyone:
        query = query.where(table.c.partner_id.in_(partner_ids))
    now: dict[int, Figures] = {}
    before: dict[int, Figures] = {}
    last_clicks: dict[int, date] = {}
    for row in db.session.execute(query).mappings():
        (now if row["is_now"] else before)[row["partner_id"]] = Figures.of(row)
        if row["last_click"] is not None:
            last_clicks[row["partner_id"]] = max(
                row["last_click"], last_clicks.get(row["partner_id"], date.min)
            )
    last_clicks.update(
        _last_clicks_before(
            [p for p in partner_ids if p not in last_clicks], before_start - timedelta(days=1)
        )
    )
    result = {}
    for partner_id in partner_ids:
        earlier = before.get(partner_id, Figures())
        result[partner_id] = (
            now.get(partner_id, Figures()),
            earlier.clicks,
            earlier.counted,
            last_clicks.get(partner_id),
        )
    return result


def _remember(stale: list, recounted: dict[int, Window], today: date) -> None:
    """Store recounted windows, each only if no event touched the partner since it was read.

    A cache refresh, so it never stands in the way: if the database is busy (SQLite's
    write lock taken meanwhile) it is skipped and the next read recounts again.
    """
    if not stale:
        return
    table = PartnerTrend.__table__
    insert = dialect_insert(db.session.get_bind().dialect.name, table)
    params = []
    for row in sorted(stale, key=lambda r: r["id"]):
        now, clicks_before, conversions_before, last_click = recounted[row["id"]]
        params.append(
            {
                "b_partner_id": row["id"],
                "b_version": row["version"] or 0,
                "b_as_of": today,
                "b_clicks_before": clicks_before,
                "b_conversions_before": conversions_before,
                "b_last_click": last_click,
                **{f"b_{name}": getattr(now, name) for name in COUNTERS},
            }
        )
    new = [{"partner_id": row["id"], "version": 0} for row in stale if row["version"] is None]
    store = (
        sa.update(table)
        .where(
            table.c.partner_id == sa.bindparam("b_partner_id"), table.c.version == sa.bindparam("b_version")
        )
        .values(
            computed_version=sa.bindparam("b_version"),
            as_of=sa.bindparam("b_as_of"),
            clicks_before=sa.bindparam("b_clicks_before"),
            conversions_before=sa.bindparam("b_conversions_before"),
            last_click=sa.bindparam("b_last_click"),
            **{name: sa.bindparam(f"b_{name}") for name in COUNTERS},
        )
    )
    try:
        with db.session.begin_nested():
            if new:
                db.session.execute(insert.on_conflict_do_nothing(index_elements=["partner_id"]), new)
            db.session.execute(store, params)
    except sa.exc.OperationalError:
        log.warning("partner trends not cached this time (database busy); they are recounted next time")


def _last_clicks_before(partner_ids: list[int], day: date) -> dict[int, date]:
    """The last day with a click on or before ``day``, for partners quiet for 60 days:
    one step back through the (partner_id, day) index each, whatever the history."""
    if not partner_ids:
        return {}
    table = PartnerDailyStat.__table__
    earlier = table.alias("earlier")
    last = (
        sa.select(earlier.c.day)
        .where(earlier.c.partner_id == Partner.id, earlier.c.clicks > 0, earlier.c.day <= day)
        .order_by(earlier.c.day.desc())
        .limit(1)
        .correlate(Partner)
        .scalar_subquery()
    )
    rows = db.session.execute(sa.select(Partner.id, last).where(Partner.id.in_(partner_ids)))
    return {partner_id: last_day for partner_id, last_day in rows if last_day is not None}


@dataclass(frozen=True)
class Queue:
    """One kind of work that waits for a person, as the operator dashboard lists it.

    Other modules add theirs with ``register_queue`` (the rewards module: link requests).
    """

    key: str  # also the page's test id, "<key>-count"
    # What waits, after its number: a lazy string ("applications to review"), or a function of
    # the count for the right plural ("1 application to review").
    label: object
    count: Callable[[], int]
    endpoint: str  # where the work is done
    endpoint_args: tuple[tuple[str, str], ...] = ()


_QUEUES: dict[str, Queue] = {}


def register_queue(queue: Queue) -> None:
    _QUEUES[queue.key] = queue


@dataclass(frozen=True)
class QueueLine:
    key: str
    label: str
    count: int
    endpoint: str
    endpoint_args: dict[str, str]


@dataclass(frozen=True)
class Queues:
    """What waits for a person, in the order the queues were registered."""

    lines: tuple[QueueLine, ...] = ()

    @property
    def total(self) -> int:
        return sum(line.count for line in self.lines)

    def count(self, key: str) -> int:
        return next((line.count for line in self.lines if line.key == key), 0)


def queues() -> Queues:
    return Queues(
        tuple(
            QueueLine(q.key, _label(q.label, count), count, q.endpoint, dict(q.endpoint_args))
            for q, count in ((q, q.count()) for q in _QUEUES.values())
        )
    )


def _label(label: object, count: int) -> str:
    return label(count) if callable(label) else str(label)


def _count(model, condition) -> Callable[[], int]:
    def count() -> int:
        return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(condition)) or 0

    return count


register_queue(
    Queue(
        "applications",
        lambda n: ngettext("application to review", "applications to review", n),
        _count(Partner, Partner.status == PartnerStatus.APPLIED),
        "admin.applications",
    )
)
register_queue(
    Queue(
        "review",
        lambda n: ngettext("conversion flagged for review", "conversions flagged for review", n),
        _count(Conversion, Conversion.status == ConversionStatus.REVIEW),
        "admin.list_conversions",
        (("status", "review"),),
    )
)
register_queue(
    Queue(
        "link_requests",
        lambda n: ngettext("custom campaign link request", "custom campaign link requests", n),
        _count(CampaignRequest, CampaignRequest.status == RequestStatus.REQUESTED),
        "admin.list_campaign_requests",
        (("status", "requested"),),
    )
)
register_queue(
    Queue(
        "batches",
        lambda n: ngettext("payout batch to approve", "payout batches to approve", n),
        _count(PayoutBatch, PayoutBatch.status == BatchStatus.REVIEW),
        "admin.list_batches",
    )
)


@dataclass
class ProgramDashboard:
    range: DateRange
    figures: Figures
    series: Series
    top_partners: list[PartnerLine]
    trends: Trends
    channels: list[Row]
    creatives: list[Row]
    queues: Queues = field(default_factory=Queues)
    coupons: list[Row] = field(default_factory=list)


def program_dashboard(rng: DateRange, today: date, timezone: str) -> ProgramDashboard:
    trends = partner_trends(today, timezone)
    same_days = (rng.start, rng.end) == (trends.window.start, trends.window.end)
    series = program_series(rng)
    return ProgramDashboard(
        range=rng,
        figures=series.total,
        series=series,
        top_partners=trends.top() if same_days else top_partners(rng),
        trends=trends,
        channels=channel_leaderboard(rng),
        creatives=creative_leaderboard(rng),
        queues=queues(),
        coupons=coupon_leaderboard(rng),
    )


# --- CSV exports -----------------------------------------------------------------------

PARTNER_TABLES = ("daily", "channel", "campaign", "link", "creative", "sub_id", "coupon", "activity")
PROGRAM_TABLES = ("daily", "top_partners", "rising", "falling", "at_risk", "channels", "creatives", "coupons")

# The exports are read by people, in a spreadsheet: their column titles are in the reader's
# language, like the page the table comes from (lazy: resolved when the file is written).
_FIGURE_HEADERS = (
    _l("Clicks"),
    _l("Unique clicks"),
    _l("Bot clicks"),
    _l("Signups"),
    _l("Conversions"),
    _l("Conversions in review"),
    _l("Rejected conversions"),
    _l("Conversion rate"),
    _l("Sales"),
    _l("Commission"),
    _l("Earnings per click"),
)


def _text(value: str | None) -> str:
    """Text that came from people: never let a spreadsheet read it as a formula
    (``to_csv`` does it to every cell as well; this keeps the table's text safe anywhere)."""
    return csvfile.neutralise(value or "")


def _figure_cells(figures: Figures, currency: str) -> list:
    rate = figures.conversion_rate
    epc = figures.epc_minor
    return [
        figures.clicks,
        figures.unique_clicks,
        figures.bot_clicks,
        figures.signups,
        figures.conversions,
        figures.conversions_review,
        figures.conversions_rejected,
        "" if rate is None else f"{rate:.4f}",
        to_decimal_string(figures.sales_minor, currency),
        to_decimal_string(figures.commission_minor, currency),
        "" if epc is None else to_decimal_string(epc, currency),
    ]


def _series_table(series: Series, currency: str) -> tuple[list, list]:
    headers = [_("Start date"), _("End date"), *_FIGURE_HEADERS]
    rows = [
        [b.start.isoformat(), b.end.isoformat(), *_figure_cells(b.figures, currency)] for b in series.buckets
    ]
    return headers, rows


def _rows_table(rows: Sequence[Row], first: str, currency: str) -> tuple[list, list]:
    extra = first == "link"
    headers = [dimension_label(first), *([_("Link code")] if extra else []), *_FIGURE_HEADERS]
    body = [
        [_text(r.label), *([_text(r.code)] if extra else []), *_figure_cells(r.figures, currency)]
        for r in rows
    ]
    return headers, body


def partner_table(partner_id: int, rng: DateRange, name: str, currency: str) -> tuple[list, list]:
    """One of the partner dashboard's tables, complete, as CSV headers and rows."""
    if name == "daily":
        return _series_table(partner_series(partner_id, rng), currency)
    if name in DIMENSIONS:
        return _rows_table(partner_breakdown(partner_id, rng, name), name, currency)
    if name == "activity":
        headers = [
            _("Time (UTC)"),
            _("Event"),
            _("Link or order"),
            _("Channel"),
            _("Sub-ID"),
            _("Amount"),
            _("Status"),
        ]
        rows = [
            [
                a.at.isoformat(),
                a.kind,
                _text(a.label),
                a.channel,
                _text(a.sub_id),
                to_decimal_string(a.amount_minor, a.currency)
                if a.kind == "conversion" and a.converted
                else "",
                a.status,
            ]
            for a in recent_activity(partner_id)
        ]
        return headers, rows
    raise ValueError(name)


def _trend_table(trends: Iterable[Trend]) -> tuple[list, list]:
    headers = [
        _("Partner"),
        _("E-mail"),
        _("Partner code"),
        _("Clicks, last 30 days"),
        _("Clicks, the 30 days before"),
        _("Conversions, last 30 days"),
        _("Conversions, the 30 days before"),
        _("Last click"),
        _("At risk because"),
    ]
    rows = [
        [
            _text(t.partner.name),
            t.partner.email,
            t.partner.ref_code,
            t.clicks_now,
            t.clicks_before,
            t.conversions_now,
            t.conversions_before,
            t.last_click.isoformat() if t.last_click else "",
            "; ".join(t.reasons),
        ]
        for t in trends
    ]
    return headers, rows


def program_table(rng: DateRange, today: date, timezone: str, name: str, currency: str) -> tuple[list, list]:
    """One of the operator dashboard's tables, complete (every partner, every creative)."""
    if name == "daily":
        return _series_table(program_series(rng), currency)
    if name == "top_partners":
        headers = [_("Partner"), _("E-mail"), _("Partner code"), *_FIGURE_HEADERS]
        rows = [
            [
                _text(line.partner.name),
                line.partner.email,
                line.partner.ref_code,
                *_figure_cells(line.figures, currency),
            ]
            for line in top_partners(rng, limit=None)
        ]
        return headers, rows
    if name in ("rising", "falling", "at_risk"):
        return _trend_table(getattr(partner_trends(today, timezone), name))
    if name == "channels":
        return _rows_table(channel_leaderboard(rng), "channel", currency)
    if name == "creatives":
        return _rows_table(creative_leaderboard(rng, limit=None), "creative", currency)
    if name == "coupons":
        return _rows_table(coupon_leaderboard(rng), "coupon", currency)
    raise ValueError(name)


def to_csv(headers: list, rows: Iterable[list]) -> str:
    """A table for people: titles in the reader's language, marked UTF-8 for spreadsheets."""
    return csvfile.to_csv(headers, rows, for_people=True)

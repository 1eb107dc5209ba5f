"""The rewards engine: which rule sets a conversion's commission, tiers, the monthly ladder, month close.

Precedence, highest first (``PRECEDENCE``; the operator console shows it):

1. a **private deal** of the partner (for the product, within its dates);
2. a **campaign** with a rate override open to the partner (dates, products, audience);
3. a **product rate** for the conversion's ``product_id``;
4. the partner's **tier** rate;
5. the program's **base** rate.

The first rule that applies sets the one rate line; the others are named in its
explanation as ``outranked``. **Bonuses stack on top**: every campaign with a fixed
bonus per conversion that applies adds a ``bonus`` line, and the monthly ladder adds a
``bonus`` line per partner and month when the month closes.

Tiers count a partner's *accepted* conversions: not rejected (a full refund rejects),
not held for review, revenue net of partial refunds. The conversion that crosses a
tier's threshold upgrades the partner **and itself earns the new tier's rate**.
Downgrades happen only when a month is closed, and only for a partner who held the
tier for that whole month and was below its threshold over the window ending at the
month's end (a full period below: the grace period); they take effect from the first
instant of the next month.

Why it is long: precedence, tiers, the ladder and the month close decide and correct
the same commission lines from one cached rule set (``tier_rules``,
``running_campaign_rules``) that changes together, and "why this amount" explains
that same precedence. The zone arithmetic and the explanations are the first to move
out, once the lifecycle calls here become outbox events.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError

from portal import realtime
from portal.database import dialect_insert
from portal.errors import DomainError
from portal.extensions import db
from portal.models import (
    RATE_KINDS,
    Campaign,
    CampaignAudience,
    CampaignReward,
    Click,
    Commission,
    CommissionKind,
    CommissionStatus,
    CommissionType,
    Conversion,
    ConversionStatus,
    LadderStep,
    Link,
    MonthClose,
    Partner,
    PartnerDailyStat,
    PartnerStatus,
    PartnerTier,
    PrivateDeal,
    ProductRate,
    Program,
    RateType,
    RecurringMode,
    Tier,
    TierChange,
    TierChangeReason,
    TierMetric,
    TierPeriod,
    campaign_partners,
    partner_tags,
)
from portal.models.types import utcnow
from portal.services import events

__all__ = ["PRECEDENCE", "RATE_KINDS", "Rate", "RuleContext", "decide", "explain", "round_half_even"]

PRECEDENCE = (
    CommissionKind.DEAL,
    CommissionKind.CAMPAIGN,
    CommissionKind.PRODUCT,
    CommissionKind.TIER,
    CommissionKind.BASE,
)

PRECEDENCE_LABELS = {
    CommissionKind.DEAL: _l("Private deal"),
    CommissionKind.CAMPAIGN: _l("Campaign rate"),
    CommissionKind.PRODUCT: _l("Product rate"),
    CommissionKind.TIER: _l("Tier rate"),
    CommissionKind.BASE: _l("Base rate"),
}


# --- arithmetic ------------------------------------------------------------------------------


def round_half_even(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded to the nearest integer, ties to the even one."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient


@dataclass(frozen=True)
class Rate:
    """A percent of the sale (basis points) or a flat amount per conversion (minor units)."""

    type: str
    percent_bp: int = 0
    flat_minor: int = 0

    @classmethod
    def of(cls, rule: Any, prefix: str = "rate") -> Rate:
        return cls(
            getattr(rule, f"{prefix}_type"),
            getattr(rule, f"{prefix}_percent_bp") or 0,
            getattr(rule, f"{prefix}_flat_minor") or 0,
        )

    @classmethod
    def base(cls, program: Program) -> Rate:
        return cls(program.commission_type, program.commission_percent_bp, program.commission_flat_minor)

    @property
    def is_percent(self) -> bool:
        return self.type in (RateType.PERCENT, CommissionType.PERCENT)

    def amount(self, sale_minor: int) -> int:
        if self.is_percent:
            return round_half_even(sale_minor * self.percent_bp, 10_000)
        return self.flat_minor

    def explanation(self, sale_minor: int) -> dict[str, Any]:
        result = self.amount(sale_minor)
        if self.is_percent:
            return {
                "type": "percent",
                "rate_bp": self.percent_bp,
                "sale_minor": sale_minor,
                "result_minor": result,
            }
        return {"type": "flat", "flat_minor": self.flat_minor, "result_minor": result}

    def words(self, currency: str) -> str:
        from portal.formatting import money, percent_bp

        if self.is_percent:
            return _("%(rate)s of each sale", rate=percent_bp(self.percent_bp))
        return _("%(amount)s per sale", amount=money(self.flat_minor, currency))


# --- time in the program's zone ------------------------------------------------------------------

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def zone(program: Program) -> ZoneInfo:
    return ZoneInfo(program.timezone or "UTC")


def month_of(at: datetime, tz: ZoneInfo) -> str:
    return at.astimezone(tz).strftime("%Y-%m")


def parse_month(text: str) -> tuple[int, int]:
    match = _MONTH.match((text or "").strip())
    if not match:
        raise DomainError(_("Give the month as YYYY-MM, e.g. 2026-11."), "month")
    return int(match.group(1)), int(match.group(2))


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def month_bounds(month: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The first instant of ``month`` (YYYY-MM) in ``tz`` and of the month after, in UTC."""
    year, number = parse_month(month)
    start = datetime(year, number, 1, tzinfo=tz).astimezone(UTC)
    end = datetime(*_next_month(year, number), 1, tzinfo=tz).astimezone(UTC)
    return start, end


def previous_month(at: datetime, tz: ZoneInfo) -> str:
    local = at.astimezone(tz)
    year, number = (local.year - 1, 12) if local.month == 1 else (local.year, local.month - 1)
    return f"{year:04d}-{number:02d}"


def local_to_utc(local: datetime, tz: ZoneInfo) -> datetime:
    """A wall-clock time typed in the program's zone (naive) as a UTC instant."""
    if local.tzinfo is not None:
        return local.astimezone(UTC)
    return local.replace(tzinfo=tz).astimezone(UTC)


def utc_to_local(at: datetime | None, tz: ZoneInfo) -> datetime | None:
    return at.astimezone(tz).replace(tzinfo=None) if at is not None else None


def add_months(at: datetime, months: int, tz: ZoneInfo) -> datetime:
    """The same wall-clock time ``months`` calendar months later (clamped to the month's last day)."""
    local = at.astimezone(tz)
    total = local.year * 12 + (local.month - 1) + months
    year, number = divmod(total, 12)
    number += 1
    following = datetime(*_next_month(year, number), 1)
    last_day = (following - timedelta(days=1)).day
    moved = local.replace(tzinfo=None).replace(year=year, month=number, day=min(local.day, last_day))
    return local_to_utc(moved, tz)


# --- which rules apply -------------------------------------------------------------------------


def product_matches(product_ids: list[str] | None, product_id: str | None) -> bool:
    return not product_ids or (product_id is not None and product_id in product_ids)


def _within(at: datetime, starts_at: datetime | None, ends_at: datetime | None) -> bool:
    return (starts_at is None or starts_at <= at) and (ends_at is None or at < ends_at)


def partner_tag_ids(partner_id: int) -> set[int]:
    return set(
        db.session.scalars(sa.select(partner_tags.c.tag_id).where(partner_tags.c.partner_id == partner_id))
    )


def current_tier(partner_id: int | None) -> Tier | None:
    if partner_id is None:
        return None
    return db.session.scalar(
        sa.select(Tier)
        .join(PartnerTier, PartnerTier.tier_id == Tier.id)
        .where(PartnerTier.partner_id == partner_id)
    )


def campaign_open_to(
    campaign: Campaign | CampaignRule, partner_id: int, tier_id: int | None, tag_ids: set[int]
) -> bool:
    if campaign.audience == CampaignAudience.EVERYONE:
        return True
    if isinstance(campaign, CampaignRule):
        tier_ids, partner_ids = campaign.tier_ids, campaign.partner_ids
    else:
        tier_ids = (
            frozenset(t.id for t in campaign.tiers) if campaign.audience == CampaignAudience.TIERS else None
        )
        partner_ids = (
            frozenset(p.id for p in campaign.partners)
            if campaign.audience == CampaignAudience.PARTNERS
            else None
        )
    if campaign.audience == CampaignAudience.TIERS:
        return tier_id is not None and tier_id in tier_ids
    if campaign.audience == CampaignAudience.TAG:
        return campaign.tag_id in tag_ids
    return partner_id in partner_ids


_AUDIENCE_WEIGHT = {
    CampaignAudience.PARTNERS: 3,
    CampaignAudience.TAG: 2,
    CampaignAudience.TIERS: 1,
    CampaignAudience.EVERYONE: 0,
}


def _campaign_rank(campaign: Campaign, link_campaign_id: int | None) -> tuple:
    """Among several rate campaigns: the one whose link was used, then the narrowest audience,
    then product-specific before all-products, then the most recently started."""
    return (
        campaign.id == link_campaign_id,
        _AUDIENCE_WEIGHT[CampaignAudience(campaign.audience)],
        bool(campaign.product_ids),
        campaign.starts_at,
        campaign.id,
    )


@dataclass
class RuleContext:
    """Everything the rules need to know about one conversion, loaded once."""

    deal: PrivateDeal | None = None
    campaigns: list[Campaign | CampaignRule] = field(default_factory=list)  # rate campaigns, best first
    bonus_campaigns: list[Campaign | CampaignRule] = field(default_factory=list)
    product_rate: ProductRate | None = None
    tier: Tier | TierRule | None = None
    tier_just_reached: bool = False
    # A renewal: the customer's first conversion through this partner, and when.
    first_conversion_at: datetime | None = None


def _link_campaign_id(conversion: Conversion) -> int | None:
    if conversion.click_id is None:
        return None
    return db.session.scalar(
        sa.select(Link.campaign_id)
        .join(Click, Click.link_id == Link.id)
        .where(Click.id == conversion.click_id)
    )


def _first_conversion_at(conversion: Conversion) -> datetime | None:
    if not conversion.customer_id or conversion.partner_id is None:
        return None
    query = sa.select(sa.func.min(Conversion.occurred_at)).where(
        Conversion.customer_id == conversion.customer_id,
        Conversion.partner_id == conversion.partner_id,
        Conversion.status != ConversionStatus.REJECTED,
        Conversion.occurred_at < conversion.occurred_at,
    )
    if conversion.id is not None:
        query = query.where(Conversion.id != conversion.id)
    return db.session.scalar(query)


@dataclass(frozen=True)
class RulesInUse:
    """Which kinds of rule the program has at all. Most programs use a few of them, and a
    kind with no rows needs no query on each sale (the tracking API's hot path)."""

    tiers: bool
    product_rates: bool
    deals: bool
    campaigns: bool


def _load_rules_in_use() -> RulesInUse:
    def some(model) -> bool:
        return bool(db.session.scalar(sa.select(sa.exists().select_from(model))))

    return RulesInUse(some(Tier), some(ProductRate), some(PrivateDeal), some(Campaign))


def rules_in_use() -> RulesInUse:
    """Cached per process and kept right by the look-up counter (tiers, product rates, deals
    and campaigns are watched rows); read afresh while this transaction changes them."""
    from portal import lookups

    if db.session.info.get(lookups.CHANGED) or lookups.touches_watched(db.session):
        return _load_rules_in_use()
    return lookups.lookups().load("rules_in_use", None, _load_rules_in_use)


# --- the rules, as this process caches them ---------------------------------------------------------
#
# The tracking API reads the same few rule rows on every sale. Like ``rules_in_use`` they are
# cached per process and kept right by the look-up counter (tiers and campaigns are watched
# rows, and so is a campaign's audience list), and read afresh while this transaction changes
# them. The cache holds plain snapshots, never ORM objects shared between sessions.


@dataclass(frozen=True)
class TierRule:
    """A tier's columns, as the rules read them (``Rate.of`` works on it)."""

    id: int
    name: str
    rank: int
    rate_type: str
    rate_percent_bp: int
    rate_flat_minor: int
    threshold_metric: str
    threshold_value: int
    period: str

    @classmethod
    def of(cls, tier: Tier) -> TierRule:
        return cls(*(getattr(tier, name) for name in cls.__dataclass_fields__))


@dataclass(frozen=True)
class CampaignRule:
    """A campaign's columns and audience lists, as the rules read them."""

    id: int
    name: str
    starts_at: datetime
    ends_at: datetime
    product_ids: tuple[str, ...]
    reward: str
    rate_type: str
    rate_percent_bp: int
    rate_flat_minor: int
    bonus_minor: int
    audience: str
    tag_id: int | None
    links_only: bool
    tier_ids: frozenset[int] = frozenset()
    partner_ids: frozenset[int] = frozenset()

    @classmethod
    def of(cls, campaign: Campaign) -> CampaignRule:
        tiers = campaign.tiers if campaign.audience == CampaignAudience.TIERS else []
        partners = campaign.partners if campaign.audience == CampaignAudience.PARTNERS else []
        return cls(
            id=campaign.id,
            name=campaign.name,
            starts_at=campaign.starts_at,
            ends_at=campaign.ends_at,
            product_ids=tuple(campaign.product_ids or ()),
            reward=campaign.reward,
            rate_type=campaign.rate_type,
            rate_percent_bp=campaign.rate_percent_bp,
            rate_flat_minor=campaign.rate_flat_minor,
            bonus_minor=campaign.bonus_minor,
            audience=campaign.audience,
            tag_id=campaign.tag_id,
            links_only=bool(campaign.links_only),
            tier_ids=frozenset(t.id for t in tiers),
            partner_ids=frozenset(p.id for p in partners),
        )


# Campaigns that ended longer ago than this are left out of the cache; a sale older than
# that (an operator approving an old one) reads them from the database.
_CAMPAIGN_HORIZON = timedelta(days=120)


def _cached(name: str, loader):
    from portal import lookups

    if db.session.info.get(lookups.CHANGED) or lookups.touches_watched(db.session):
        return loader()
    return lookups.lookups().load(name, None, loader)


def tier_rules() -> tuple[TierRule, ...]:
    """Every tier, lowest first (cached per process)."""
    return _cached("tier_rules", lambda: tuple(TierRule.of(t) for t in all_tiers()))


def _load_campaign_rules() -> tuple[datetime, tuple[CampaignRule, ...]]:
    since = utcnow() - _CAMPAIGN_HORIZON
    campaigns = db.session.scalars(sa.select(Campaign).where(Campaign.ends_at > since).order_by(Campaign.id))
    return since, tuple(CampaignRule.of(c) for c in campaigns)


def running_campaign_rules(at: datetime) -> list[CampaignRule]:
    """``running_campaigns(at)`` as snapshots, from the cache when ``at`` is recent enough."""
    since, rules = _cached("campaign_rules", _load_campaign_rules)
    if at < since:
        return [CampaignRule.of(c) for c in running_campaigns(at)]
    return [c for c in rules if c.starts_at <= at < c.ends_at]


_UNKNOWN: Any = object()


def load_context(conversion: Conversion, tier: Tier | TierRule | None = _UNKNOWN) -> RuleContext:
    """What the rules need to know about ``conversion``. ``tier``: the partner's, when the
    caller knows it already (the tracking API reads it with the sale's insert)."""
    context = RuleContext()
    in_use = rules_in_use()
    context.product_rate = (
        db.session.scalar(sa.select(ProductRate).where(ProductRate.product_id == conversion.product_id))
        if conversion.product_id and in_use.product_rates
        else None
    )
    partner_id = conversion.partner_id
    if partner_id is None:
        return context
    at = conversion.occurred_at
    if not in_use.tiers:
        context.tier = None
    else:
        context.tier = current_tier(partner_id) if tier is _UNKNOWN else tier
    deals = (
        db.session.scalars(
            sa.select(PrivateDeal).where(PrivateDeal.partner_id == partner_id).order_by(PrivateDeal.id.desc())
        ).all()
        if in_use.deals
        else []
    )
    fitting = [
        d
        for d in deals
        if product_matches(d.product_ids, conversion.product_id) and _within(at, d.starts_at, d.ends_at)
    ]
    # A deal for named products beats a deal for every product; the newest breaks a tie.
    fitting.sort(key=lambda d: (bool(d.product_ids), d.id), reverse=True)
    context.deal = fitting[0] if fitting else None

    # Audiences load lazily: only a tiers or named-partners campaign reads its list.
    running = running_campaign_rules(at) if in_use.campaigns else []
    if running:
        # Only a campaign for a tag, or one for links, needs to know more about the sale.
        needs_tags = any(c.audience == CampaignAudience.TAG for c in running)
        tag_ids = partner_tag_ids(partner_id) if needs_tags else set()
        tier_id = context.tier.id if context.tier else None
        link_campaign_id = _link_campaign_id(conversion)
        applying = [
            c
            for c in running
            if product_matches(c.product_ids, conversion.product_id)
            and campaign_open_to(c, partner_id, tier_id, tag_ids)
            and (not c.links_only or c.id == link_campaign_id)
        ]
        rates = [c for c in applying if c.reward == CampaignReward.RATE]
        rates.sort(key=lambda c: _campaign_rank(c, link_campaign_id), reverse=True)
        context.campaigns = rates
        context.bonus_campaigns = sorted(
            (c for c in applying if c.reward == CampaignReward.BONUS), key=lambda c: c.id
        )
    context.first_conversion_at = _first_conversion_at(conversion)
    return context


@dataclass
class CommissionDraft:
    kind: str
    amount_minor: int
    explanation: dict[str, Any] = field(default_factory=dict)


def _renewal_allowed(program: Program, conversion: Conversion, first_at: datetime) -> tuple[bool, dict]:
    info: dict[str, Any] = {"first_at": first_at.isoformat(), "mode": program.recurring_mode}
    if program.recurring_mode == RecurringMode.FOREVER:
        return True, info
    if program.recurring_mode == RecurringMode.MONTHS:
        months = program.recurring_months or 0
        until = add_months(first_at, months, zone(program))
        info |= {"months": months, "until": until.isoformat()}
        return conversion.occurred_at < until, info
    return False, info


def decide(program: Program, conversion: Conversion, context: RuleContext) -> list[CommissionDraft]:
    """The commission lines of ``conversion`` under ``context``: pure, no database."""
    sale = conversion.amount_minor
    renewal: dict[str, Any] | None = None
    if context.first_conversion_at is not None:
        allowed, renewal = _renewal_allowed(program, conversion, context.first_conversion_at)
        if not allowed:
            return [
                CommissionDraft(
                    CommissionKind.BASE,
                    0,
                    {"rule": "renewal_ended", "renewal": renewal, "sale_minor": sale, "result_minor": 0},
                )
            ]

    candidates: list[tuple[str, Rate, dict[str, Any]]] = []
    if context.deal is not None:
        deal = context.deal
        candidates.append((CommissionKind.DEAL, Rate.of(deal), {"deal_id": deal.id}))
    for campaign in context.campaigns[:1]:
        candidates.append(
            (
                CommissionKind.CAMPAIGN,
                Rate.of(campaign),
                {"campaign_id": campaign.id, "campaign": campaign.name},
            )
        )
    if context.product_rate is not None:
        candidates.append(
            (
                CommissionKind.PRODUCT,
                Rate.of(context.product_rate),
                {"product_id": context.product_rate.product_id},
            )
        )
    if context.tier is not None:
        tier = context.tier
        extra: dict[str, Any] = {"tier_id": tier.id, "tier": tier.name}
        if context.tier_just_reached:
            extra["reached_with_this_sale"] = True
        candidates.append((CommissionKind.TIER, Rate.of(tier), extra))
    candidates.append((CommissionKind.BASE, Rate.base(program), {}))

    kind, rate, extra = candidates[0]
    explanation: dict[str, Any] = {"rule": str(kind), **rate.explanation(sale), **extra}
    outranked = [str(k) for k, _rate, _extra in candidates[1:] if k != CommissionKind.BASE]
    if outranked:
        explanation["outranked"] = outranked
    if renewal is not None:
        explanation["renewal"] = renewal
    drafts = [CommissionDraft(kind, explanation["result_minor"], explanation)]
    for campaign in context.bonus_campaigns:
        drafts.append(
            CommissionDraft(
                CommissionKind.BONUS,
                campaign.bonus_minor,
                {
                    "rule": "campaign_bonus",
                    "campaign_id": campaign.id,
                    "campaign": campaign.name,
                    "bonus_minor": campaign.bonus_minor,
                    "result_minor": campaign.bonus_minor,
                },
            )
        )
    return drafts


# --- tiers --------------------------------------------------------------------------------------

_ROLLING_DAYS = {TierPeriod.ROLLING_30: 30, TierPeriod.ROLLING_90: 90}


def all_tiers() -> list[Tier]:
    return list(db.session.scalars(sa.select(Tier).order_by(Tier.rank)))


def _counted() -> sa.ColumnElement[bool]:
    """Conversions that count for tiers and the ladder: accepted, not rejected, under review or
    waiting for an exchange rate."""
    return Conversion.status == ConversionStatus.PENDING


def _metric_column(metric: str):
    if metric == TierMetric.REVENUE:
        return sa.func.coalesce(sa.func.sum(Conversion.amount_minor - Conversion.refunded_minor), 0)
    return sa.func.count(Conversion.id)


def metric_of(partner_id: int, metric: str, start: datetime, end: datetime, inclusive: bool = False) -> int:
    """The partner's ``metric`` over [start, end) — or [start, end] when ``inclusive``."""
    upper = Conversion.occurred_at <= end if inclusive else Conversion.occurred_at < end
    value = db.session.scalar(
        sa.select(_metric_column(metric)).where(
            Conversion.partner_id == partner_id, _counted(), Conversion.occurred_at >= start, upper
        )
    )
    return int(value or 0)


def metrics_by_partner(metric: str, start: datetime, end: datetime) -> dict[int, int]:
    rows = db.session.execute(
        sa.select(Conversion.partner_id, _metric_column(metric))
        .where(
            Conversion.partner_id.is_not(None),
            _counted(),
            Conversion.occurred_at >= start,
            Conversion.occurred_at < end,
        )
        .group_by(Conversion.partner_id)
    ).all()
    return {partner_id: int(value or 0) for partner_id, value in rows}


def live_windows(tier: Tier, at: datetime, tz: ZoneInfo) -> list[tuple[datetime, datetime, str]]:
    """Where an upgrade may come from at ``at`` (ends inclusive).

    A calendar-month tier looks at the month so far (crossing the threshold upgrades at once)
    and at the previous full month; a rolling tier at the last 30 or 90 days.
    """
    if tier.period == TierPeriod.PREVIOUS_MONTH:
        this_month = month_of(at, tz)
        start, _end = month_bounds(this_month, tz)
        last = previous_month(at, tz)
        last_start, last_end = month_bounds(last, tz)
        return [(start, at, this_month), (last_start, last_end - timedelta(microseconds=1), last)]
    days = _ROLLING_DAYS[TierPeriod(tier.period)]
    return [(at - timedelta(days=days), at, f"{days}d")]


def close_window(tier: Tier, month: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The window a month close judges ``tier`` on: the month itself, or the rolling days to its end."""
    start, end = month_bounds(month, tz)
    if tier.period == TierPeriod.PREVIOUS_MONTH:
        return start, end
    # Whole days on the program's clock: 24-hour steps back from the end would start the
    # window at 01:00 (or 23:00 the day before) when a clock change falls within it.
    first_day = end.astimezone(tz).date() - timedelta(days=_ROLLING_DAYS[TierPeriod(tier.period)])
    return local_to_utc(datetime.combine(first_day, datetime.min.time()), tz), end


def close_window_code(tier: Tier, month: str) -> str:
    """How a tier change records a month close's rolling window: "30d:2026-11" (the 30 days to
    the end of November). A code, not words: ``window_words`` says it in the reader's language."""
    return f"{_ROLLING_DAYS[TierPeriod(tier.period)]}d:{month}"


_DAYS = re.compile(r"^(\d+)d$")
# "rolling_30 to 2026-11" is how changes written before the code above stored the same window.
_DAYS_TO_MONTH = re.compile(r"^(?:(\d+)d:|rolling_(\d+) to )(\d{4}-(?:0[1-9]|1[0-2]))$")


def _month_words(month: str) -> str:
    from babel.dates import format_skeleton
    from flask_babel import get_locale

    year, number = _MONTH.match(month).groups()
    return format_skeleton("yMMMM", date(int(year), int(number), 1), locale=str(get_locale() or "en"))


def window_words(window: str | None) -> str:
    """A tier change's window ("2026-11", "30d", "30d:2026-11") in the reader's words."""
    if not window:
        return ""
    if _MONTH.match(window):
        return _month_words(window)
    if match := _DAYS.match(window):
        return _("the last %(days)d days", days=int(match.group(1)))
    if match := _DAYS_TO_MONTH.match(window):
        days = int(match.group(1) or match.group(2))
        return _("the %(days)d days to the end of %(month)s", days=days, month=_month_words(match.group(3)))
    return window


@dataclass
class Standing:
    tier: Tier
    value: int
    window: str


# --- tiers on each sale, from the partner's daily counters -----------------------------------------
#
# A sale asks whether it lifts its partner into a higher tier. The metrics come from the
# partner's day counters (``stats_partner_daily``, kept with every conversion, refund,
# rejection and approval in the same transaction), never from summing past conversions: a
# window reads at most its days' rows, however long the partner's history. Windows are whole
# days in the program's time zone (the rollups' days): a rolling tier counts the sale's day
# and the days before it (30 or 90 days in all), a calendar-month tier the month so far and
# the previous month. The month close judges whole days too (``close_window``).

# Accepted conversions and their sales, net of refunds, from the counters: not those under
# review, rejected or waiting for their exchange rate (held; their sales are 0 until converted).
_COUNTED = {
    TierMetric.CONVERSIONS: (
        PartnerDailyStat.conversions
        - PartnerDailyStat.conversions_review
        - PartnerDailyStat.conversions_rejected
        - PartnerDailyStat.conversions_held
    ),
    TierMetric.REVENUE: PartnerDailyStat.sales_minor - PartnerDailyStat.sales_review_minor,
}


def live_day_windows(tier: Tier | TierRule, at: datetime, tz: ZoneInfo) -> list[tuple[date, date, str]]:
    """The days (first, last, inclusive) a sale at ``at`` may upgrade ``tier`` from, with their labels."""
    day = at.astimezone(tz).date()
    if tier.period == TierPeriod.PREVIOUS_MONTH:
        first = day.replace(day=1)
        last_month_end = first - timedelta(days=1)
        return [
            (first, day, month_of(at, tz)),
            (last_month_end.replace(day=1), last_month_end, last_month_end.strftime("%Y-%m")),
        ]
    days = _ROLLING_DAYS[TierPeriod(tier.period)]
    return [(day - timedelta(days=days - 1), day, f"{days}d")]


@dataclass
class PartnerFacts:
    """What a sale needs to know about its partner's tier: the tier now and the metrics of every
    live window, from the counters as they were before this sale was counted."""

    tier_id: int | None
    metrics: dict[tuple[str, date, date], int]


# Built once per shape (which metric each window slot sums) and reused: a statement
# object's cache key is computed once, and building one per sale cost more than running it.
_PROBE_COLUMNS: dict[tuple[str, ...], list] = {}
_PROBE_SELECTS: dict[tuple[str, ...], sa.Select] = {}


def _tier_and_metrics(partner_id, shape: tuple[str, ...]) -> list:
    """The partner's tier and each window's metric, as scalar subqueries on ``partner_id`` (a
    bound parameter, or a column to correlate with)."""
    current = sa.select(PartnerTier.tier_id).where(PartnerTier.partner_id == partner_id)
    columns = [current.scalar_subquery().label("probe_tier_id")]
    for index, metric in enumerate(shape):
        value = sa.select(sa.func.coalesce(sa.func.sum(_COUNTED[TierMetric(metric)]), 0)).where(
            PartnerDailyStat.partner_id == partner_id,
            PartnerDailyStat.day >= sa.bindparam(f"probe_first_{index}", type_=sa.Date),
            PartnerDailyStat.day <= sa.bindparam(f"probe_last_{index}", type_=sa.Date),
        )
        columns.append(value.scalar_subquery().label(f"probe_{index}"))
    return columns


def _probe_columns(shape: tuple[str, ...]) -> list:
    columns = _PROBE_COLUMNS.get(shape)
    if columns is None:
        partner_id = sa.bindparam("probe_partner_id", type_=sa.Integer)
        columns = _PROBE_COLUMNS[shape] = _tier_and_metrics(partner_id, shape)
    return columns


class TierProbe:
    """The columns that read a partner's tier and window metrics: selected on their own, or
    returned by the sale's own INSERT (one round trip for both), with ``params`` bound."""

    def __init__(self, partner_id: int, at: datetime, tz: ZoneInfo, tiers: Iterable[Tier | TierRule]):
        keys = {
            (str(tier.threshold_metric), first, last)
            for tier in tiers
            for first, last, _ in live_day_windows(tier, at, tz)
        }
        self.keys = sorted(keys)
        self.shape = tuple(metric for metric, _first, _last in self.keys)
        self.columns = _probe_columns(self.shape)
        self.params: dict[str, Any] = {"probe_partner_id": partner_id}
        for index, (_metric, first, last) in enumerate(self.keys):
            self.params[f"probe_first_{index}"] = first
            self.params[f"probe_last_{index}"] = last

    def read(self, row: Any) -> PartnerFacts:
        values = list(row[-len(self.columns) :])
        return PartnerFacts(
            tier_id=values[0],
            metrics={key: int(v or 0) for key, v in zip(self.keys, values[1:], strict=True)},
        )

    def fetch(self) -> PartnerFacts:
        statement = _PROBE_SELECTS.get(self.shape)
        if statement is None:
            statement = _PROBE_SELECTS[self.shape] = sa.select(*self.columns)
        return self.read(db.session.execute(statement, self.params).one())


# The same probe for many partners at once (a batch of sales, ``portal.salewriter``): the
# columns correlated to each listed partner instead of bound to one. On PostgreSQL the
# partners' ids are one array (``= ANY``), so the statement's text is the same for any number
# of partners: the driver parses it once and the server prepares it once, where an ``IN``
# list is rendered again for every batch, new text for every size.
_MANY_SELECTS: dict[tuple[str, tuple[str, ...]], sa.Select] = {}


def _probe_many_select(dialect: str, shape: tuple[str, ...]) -> sa.Select:
    statement = _MANY_SELECTS.get((dialect, shape))
    if statement is None:
        if dialect == "postgresql":
            ids = sa.bindparam("probe_partner_ids", type_=postgresql.ARRAY(sa.Integer))
            listed = Partner.id == sa.any_(ids)
        else:
            listed = Partner.id.in_(sa.bindparam("probe_partner_ids", expanding=True))
        statement = _MANY_SELECTS[(dialect, shape)] = sa.select(
            Partner.id, *_tier_and_metrics(Partner.id, shape)
        ).where(listed)
    return statement


def read_probes(probes: Iterable[TierProbe]) -> dict[int, PartnerFacts]:
    """Every probe's answer by partner, one SELECT for all the probes that ask about the same
    days (a batch's sales of today: one statement). At most one probe per partner: each
    reads the counters as they stand, before any of the sales is counted."""
    groups: dict[tuple, list[TierProbe]] = {}
    for probe in probes:
        groups.setdefault((probe.shape, tuple(probe.keys)), []).append(probe)
    facts: dict[int, PartnerFacts] = {}
    for (shape, _keys), group in groups.items():
        first = group[0]
        params = {key: value for key, value in first.params.items() if key != "probe_partner_id"}
        ids = [probe.params["probe_partner_id"] for probe in group]
        if len(set(ids)) != len(ids):
            raise ValueError("read_probes: one probe per partner")
        params["probe_partner_ids"] = ids
        connection = db.session.connection()
        statement = _probe_many_select(connection.dialect.name, shape)
        for row in connection.execute(statement, params):
            facts[row[0]] = first.read(row)
    return facts


def tier_probe(program: Program, partner_id: int, at: datetime) -> TierProbe | None:
    """The probe for a sale of ``partner_id`` at ``at``; None when the program has no tiers."""
    if not rules_in_use().tiers:
        return None
    tiers = tier_rules()
    return TierProbe(partner_id, at, zone(program), tiers) if tiers else None


def tier_rate_words(tier: Tier | None, program: Program) -> str:
    rate = Rate.of(tier) if tier is not None else Rate.base(program)
    return rate.words(program.currency)


def set_tier(
    program: Program,
    partner: Partner,
    tier: Tier | None,
    *,
    reason: str,
    since: datetime,
    metric: str | None = None,
    value: int | None = None,
    window: str | None = None,
    conversion_id: int | None = None,
    actor=None,
    note: str | None = None,
    only_up: bool = False,
) -> TierChange | None:
    """Move ``partner`` to ``tier`` (None: no tier); writes the timeline entry and tells the partner.

    ``only_up``: do nothing unless it is a move up (an automatic upgrade racing another).
    """
    # Lock the partner's tier row (PostgreSQL) so two sales at once cannot both move it.
    current = db.session.get(PartnerTier, partner.id, with_for_update=True, populate_existing=True)
    old = current.tier if current is not None else None
    if (old.id if old else None) == (tier.id if tier else None):
        return None
    upgrade = (tier.rank if tier else 0) > (old.rank if old else 0)
    if only_up and not upgrade:
        return None
    if tier is None:
        if current is not None:
            db.session.delete(current)
    elif current is None:
        try:
            with db.session.begin_nested():
                db.session.add(PartnerTier(partner_id=partner.id, tier_id=tier.id, since=since))
        except IntegrityError:
            return None  # a concurrent sale gave the partner a tier a moment ago
    else:
        current.tier_id = tier.id
        current.tier = tier
        current.since = since
    change = TierChange(
        partner_id=partner.id,
        from_tier_id=old.id if old else None,
        to_tier_id=tier.id if tier else None,
        from_name=old.name if old else None,
        to_name=tier.name if tier else None,
        upgrade=upgrade,
        reason=reason,
        metric=metric,
        metric_value=value,
        window=window,
        conversion_id=conversion_id,
        actor_id=actor.id if actor else None,
        note=note,
        created_at=utcnow(),
    )
    db.session.add(change)
    db.session.flush()
    # The partner hears of it from the outbox (lifecycle: the upgrade message, or the note on a move down).
    events.record(
        "partner.tier_changed",
        {
            "partner_id": partner.id,
            "change_id": change.id,
            "from_tier": change.from_name,
            "to_tier": change.to_name,
            "to_tier_id": change.to_tier_id,
            "upgrade": upgrade,
        },
        partner_id=partner.id,
    )
    realtime.notify(partner.id, "rewards", {"tier": tier.name if tier else None, "upgrade": upgrade})
    return change


@dataclass
class Upgrade:
    """What ``upgrade_on_conversion`` found: the partner's tier for this sale, and the change
    that put them there (a ``TierChange``, or its id; None: the tier they already had)."""

    tier: TierRule | None
    change: TierChange | int | None = None


_TIERS_TABLE = PartnerTier.__table__
_CHANGES_TABLE = TierChange.__table__


# ``_move_up``'s upsert of the tier row, built once per (dialect, whether the probe read a
# tier): a statement built for each upgrade cost more than running it.
_MOVE_UP_UPSERTS: dict[tuple[str, bool], sa.Insert] = {}
_INSERT_CHANGE = sa.insert(_CHANGES_TABLE).returning(_CHANGES_TABLE.c.id)


def _move_up_upsert(dialect: str, had_tier: bool) -> sa.Insert:
    upsert = _MOVE_UP_UPSERTS.get((dialect, had_tier))
    if upsert is None:
        values = {name: sa.bindparam(name) for name in ("partner_id", "tier_id", "since")}
        insert = dialect_insert(dialect, _TIERS_TABLE).values(values)
        unchanged = _TIERS_TABLE.c.tier_id == sa.bindparam("old_tier_id") if had_tier else sa.false()
        upsert = _MOVE_UP_UPSERTS[(dialect, had_tier)] = insert.on_conflict_do_update(
            index_elements=[_TIERS_TABLE.c.partner_id],
            set_={"tier_id": insert.excluded.tier_id, "since": insert.excluded.since},
            where=unchanged,
        ).returning(_TIERS_TABLE.c.partner_id)
    return upsert


def _move_up(
    conversion: Conversion, old_tier_id: int | None, old: TierRule | None, standing: Standing
) -> int | None:
    """The sale's own upgrade, from the tier its probe read (under the partner's lock, in this
    transaction): the partner's tier row set only if it still holds that tier (one upsert),
    the change and its event inserted — three prebuilt statements where ``set_tier`` loads
    the partner, the tier row and the tier first. The change's id, or None when the row no
    longer holds the tier the probe read (an operator moved the partner meanwhile): the
    caller then goes the general way, which reads the row under its lock."""
    partner_id, tier = conversion.partner_id, standing.tier
    upsert = _move_up_upsert(db.session.get_bind().dialect.name, old_tier_id is not None)
    values = {"partner_id": partner_id, "tier_id": tier.id, "since": conversion.occurred_at}
    if old_tier_id is not None:
        values["old_tier_id"] = old_tier_id
    if db.session.execute(upsert, values).first() is None:
        return None
    # A tier row this session loaded before is stale now.
    loaded = db.session.identity_map.get(db.session.identity_key(PartnerTier, partner_id))
    if loaded is not None:
        db.session.expire(loaded)
    change = {
        "partner_id": partner_id,
        "from_tier_id": old.id if old else None,
        "to_tier_id": tier.id,
        "from_name": old.name if old else None,
        "to_name": tier.name,
        "upgrade": True,
        "reason": TierChangeReason.THRESHOLD_REACHED,
        "metric": tier.threshold_metric,
        "metric_value": standing.value,
        "window": standing.window,
        "conversion_id": conversion.id,
        "created_at": utcnow(),
    }
    change_id = db.session.execute(_INSERT_CHANGE, change).scalar_one()
    # As ``set_tier`` tells it: the partner hears of it from the outbox, open pages live.
    data = {"partner_id": partner_id, "change_id": change_id, "from_tier": change["from_name"]}
    data |= {"to_tier": tier.name, "to_tier_id": tier.id, "upgrade": True}
    events.record_many([("partner.tier_changed", data, partner_id)])
    realtime.notify(partner_id, "rewards", {"tier": tier.name, "upgrade": True})
    return change_id


def upgrade_on_conversion(
    program: Program, conversion: Conversion, facts: PartnerFacts | None = None
) -> Upgrade | None:
    """Called as a conversion is accepted (before its rollups count it): the partner moves up
    at once if it crossed a threshold. ``facts``: the probe's answer, when the caller read it
    with the sale's insert. None when the program has no tiers or the sale does not count."""
    if conversion.partner_id is None or conversion.status != ConversionStatus.PENDING:
        return None
    if not rules_in_use().tiers:
        return None
    tiers = tier_rules()
    if not tiers:
        return None
    tz = zone(program)
    at = conversion.occurred_at
    probed = facts is not None
    if facts is None:
        db.session.flush()
        facts = TierProbe(conversion.partner_id, at, tz, tiers).fetch()
    by_id = {t.id: t for t in tiers}
    current = by_id.get(facts.tier_id) if facts.tier_id is not None else None
    # The counters do not hold this sale yet (its rollups are written after its lines). It adds
    # itself only to the windows that hold its day: never to the previous month's.
    own = {TierMetric.CONVERSIONS: 1, TierMetric.REVENUE: conversion.amount_minor - conversion.refunded_minor}
    sale_day = at.astimezone(tz).date()
    standing = None
    # Only tiers above the current one can be an upgrade; most sales change nothing.
    for tier in sorted(tiers, key=lambda t: t.rank, reverse=True):
        if current is not None and tier.rank <= current.rank:
            break
        for first, last, label in live_day_windows(tier, at, tz):
            value = facts.metrics[(tier.threshold_metric, first, last)]
            if first <= sale_day <= last:
                value += own[TierMetric(tier.threshold_metric)]
            if value >= tier.threshold_value:
                standing = Standing(tier, value, label)
                break
        if standing is not None:
            break
    if standing is None:
        return Upgrade(current)
    # The fast way needs the tier the probe read among the rules (its name for the change).
    if probed and (facts.tier_id is None) == (current is None):
        change_id = _move_up(conversion, facts.tier_id, current, standing)
        if change_id is not None:
            return Upgrade(standing.tier, change_id)
        # Someone else moved the partner since the probe read their tier (an operator):
        # the general path below reads where they are now, under the row's lock.
    # Not its tags (a selectin load of their own): the tier change needs the partner's row only.
    partner = db.session.get(Partner, conversion.partner_id, options=(orm.lazyload(Partner.tags),))
    change = set_tier(
        program,
        partner,
        db.session.get(Tier, standing.tier.id),
        reason=TierChangeReason.THRESHOLD_REACHED,
        since=conversion.occurred_at,
        metric=standing.tier.threshold_metric,
        value=standing.value,
        window=standing.window,
        conversion_id=conversion.id,
        only_up=True,
    )
    if change is None:  # a concurrent sale moved the partner a moment ago: read where they are
        return Upgrade(None if (tier := current_tier(conversion.partner_id)) is None else TierRule.of(tier))
    return Upgrade(standing.tier, change)


@dataclass
class TierCloseResult:
    upgrades: int = 0
    downgrades: int = 0


def evaluate_tiers_at_close(program: Program, month: str) -> TierCloseResult:
    """At a month's close: downgrade partners a full month below their tier, upgrade any who qualify.

    Safe to run twice: a change takes effect from the start of the next month, and a
    partner is only judged on a month they held their tier for from its first day.
    """
    tz = zone(program)
    start, end = month_bounds(month, tz)
    tiers = all_tiers()
    result = TierCloseResult()
    if not tiers:
        return result
    values: dict[tuple[str, datetime, datetime], dict[int, int]] = {}

    def value_of(tier: Tier, partner_id: int) -> int:
        window = close_window(tier, month, tz)
        key = (tier.threshold_metric, *window)
        if key not in values:
            values[key] = metrics_by_partner(tier.threshold_metric, *window)
        return values[key].get(partner_id, 0)

    def best(partner_id: int) -> Tier | None:
        return next(
            (
                t
                for t in sorted(tiers, key=lambda t: t.rank, reverse=True)
                if value_of(t, partner_id) >= t.threshold_value
            ),
            None,
        )

    holders = {row.partner_id: row for row in db.session.scalars(sa.select(PartnerTier))}
    active = set(metrics_by_partner(TierMetric.CONVERSIONS, start - timedelta(days=90), end))
    partner_ids = sorted(set(holders) | active)
    approved = {
        p.id: p
        for p in db.session.scalars(
            sa.select(Partner).where(Partner.id.in_(partner_ids), Partner.status == PartnerStatus.APPROVED)
        )
    }
    tier_by_id = {t.id: t for t in tiers}
    for partner_id in partner_ids:
        partner = approved.get(partner_id)
        if partner is None:
            continue
        held = holders.get(partner_id)
        current = tier_by_id.get(held.tier_id) if held else None
        target = best(partner_id)
        target_rank = target.rank if target else 0
        current_rank = current.rank if current else 0
        if target_rank > current_rank:
            tier = target
            reason = TierChangeReason.THRESHOLD_REACHED
        elif target_rank < current_rank and held is not None and held.since <= start:
            tier = target
            reason = TierChangeReason.BELOW_THRESHOLD
        else:
            continue
        judged = current if reason == TierChangeReason.BELOW_THRESHOLD else tier
        change = set_tier(
            program,
            partner,
            tier,
            reason=reason,
            since=end,
            metric=judged.threshold_metric,
            value=value_of(judged, partner_id),
            window=month if judged.period == TierPeriod.PREVIOUS_MONTH else close_window_code(judged, month),
            only_up=reason == TierChangeReason.THRESHOLD_REACHED,
        )
        if change is not None:
            if change.upgrade:
                result.upgrades += 1
            else:
                result.downgrades += 1
    return result


# --- the monthly ladder --------------------------------------------------------------------------


def running_campaigns(at: datetime) -> list[Campaign]:
    """Campaigns running at ``at`` (they start inclusive and end exclusive)."""
    return list(
        db.session.scalars(sa.select(Campaign).where(Campaign.starts_at <= at, Campaign.ends_at > at))
    )


def ladder_steps() -> list[LadderStep]:
    return list(db.session.scalars(sa.select(LadderStep).order_by(LadderStep.threshold_conversions)))


def step_for(count: int, steps: list[LadderStep]) -> LadderStep | None:
    """The highest step reached (steps are not added together)."""
    reached = [s for s in steps if count >= s.threshold_conversions]
    return reached[-1] if reached else None


def ladder_count(partner_id: int, month: str, tz: ZoneInfo) -> int:
    start, end = month_bounds(month, tz)
    return metric_of(partner_id, TierMetric.CONVERSIONS, start, end)


def write_ladder_bonuses(program: Program, month: str) -> int:
    """One ``bonus`` line per partner who reached a step in ``month``; never twice (unique key)."""
    tz = zone(program)
    steps = ladder_steps()
    if not steps:
        return 0
    start, end = month_bounds(month, tz)
    counts = metrics_by_partner(TierMetric.CONVERSIONS, start, end)
    done = set(db.session.scalars(sa.select(Commission.partner_id).where(Commission.period == month)))
    written = 0
    for partner_id, count in sorted(counts.items()):
        step = step_for(count, steps)
        if step is None or partner_id in done:
            continue
        line = Commission(
            conversion_id=None,
            partner_id=partner_id,
            kind=CommissionKind.BONUS,
            amount_minor=step.bonus_minor,
            currency=program.currency,
            status=CommissionStatus.PENDING,
            confirm_after=end + timedelta(days=program.hold_period_days),
            period=month,
            explanation={
                "rule": "ladder",
                "month": month,
                "conversions": count,
                "step_conversions": step.threshold_conversions,
                "bonus_minor": step.bonus_minor,
                "result_minor": step.bonus_minor,
            },
        )
        try:
            with db.session.begin_nested():
                db.session.add(line)
        except IntegrityError:
            continue  # another run wrote this month's bonus a moment ago
        written += 1
        realtime.notify(partner_id, "earnings", {"bonus": month})
    return written


def ladder_bonus_line(partner_id: int, month: str) -> Commission | None:
    return db.session.scalar(
        sa.select(Commission).where(Commission.partner_id == partner_id, Commission.period == month)
    )


def correction(
    base: Commission, amount_minor: int, reason: str, note: str | None, explanation: dict
) -> Commission:
    """A negative line that takes back (part of) ``base``; the original is never edited.

    Before the base line is in a payout it is a *reversal* with the base's own
    status; once it is in a payout it is a *clawback*, confirmed at once, that
    the next batch nets off.
    """
    now = utcnow()
    in_payout = base.payout_item is not None
    confirmed = in_payout or base.status == CommissionStatus.CONFIRMED
    line = Commission(
        conversion=base.conversion,
        partner_id=base.partner_id,
        kind=CommissionKind.CLAWBACK if in_payout else CommissionKind.REVERSAL,
        amount_minor=-amount_minor,
        currency=base.currency,
        status=CommissionStatus.CONFIRMED if confirmed else CommissionStatus.PENDING,
        confirm_after=now if confirmed else base.confirm_after,
        confirmed_at=now if confirmed else None,
        reverses_id=base.id,
        reason_code=reason,
        note=note,
        explanation=explanation,
    )
    db.session.add(line)
    return line


def reverse_ladder_if_needed(
    program: Program, conversion: Conversion, reason: str, note: str | None
) -> Commission | None:
    """After a conversion stops counting (refund, rejection): if its month's ladder bonus was
    already written and the month's count now reaches a lower step (or none), a new line
    takes back the difference. The bonus line itself is never edited."""
    if conversion.partner_id is None:
        return None
    tz = zone(program)
    month = month_of(conversion.occurred_at, tz)
    bonus = ladder_bonus_line(conversion.partner_id, month)
    if bonus is None:
        return None
    db.session.flush()
    count = ladder_count(conversion.partner_id, month, tz)
    # Judged on the step the bonus paid (the ladder may have changed since the close): while
    # the month still reaches it, the bonus stands; below it, the lower steps apply.
    paid_step = (bonus.explanation or {}).get("step_conversions")
    if paid_step is not None and count >= paid_step:
        return None
    lower = [s for s in ladder_steps() if paid_step is None or s.threshold_conversions < paid_step]
    step = step_for(count, lower)
    entitled = min(step.bonus_minor if step else 0, bonus.amount_minor)
    taken_back = -(
        db.session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(Commission.amount_minor), 0)).where(
                Commission.reverses_id == bonus.id
            )
        )
        or 0
    )
    still = bonus.amount_minor - taken_back
    if entitled >= still:
        return None
    return correction(
        bonus,
        still - entitled,
        reason,
        note,
        {
            "rule": "ladder_reversal",
            "month": month,
            "conversion_id": conversion.id,
            "order": conversion.transaction_id,
            "conversions": count,
            "step_conversions": step.threshold_conversions if step else None,
            "entitled_minor": entitled,
            "reversed_minor": still - entitled,
        },
    )


# --- closing a month ------------------------------------------------------------------------------


@dataclass
class CloseReport:
    month: str
    bonus_lines: int
    upgrades: int
    downgrades: int
    first_close: bool

    def __str__(self) -> str:
        again = "" if self.first_close else " (closed before; only what was missing was done)"
        return (
            f"{self.month}: {self.bonus_lines} ladder bonus lines, {self.upgrades} tier upgrades, "
            f"{self.downgrades} tier downgrades{again}"
        )


def close_month(program: Program, month: str, now: datetime | None = None) -> CloseReport:
    """Write the month's ladder bonuses and evaluate tiers. Idempotent: safe to run twice."""
    now = now or utcnow()
    tz = zone(program)
    _start, end = month_bounds(month, tz)
    if now < end:
        raise DomainError(_("%(month)s has not ended yet in the program's time zone.", month=month), "month")
    bonus_lines = write_ladder_bonuses(program, month)
    tiers = evaluate_tiers_at_close(program, month)
    record = db.session.get(MonthClose, month)
    first = record is None
    if first:
        try:
            with db.session.begin_nested():
                db.session.add(
                    MonthClose(
                        month=month, closed_at=now, bonus_lines=bonus_lines, downgrades=tiers.downgrades
                    )
                )
        except IntegrityError:
            first = False
    else:
        record.bonus_lines += bonus_lines
        record.downgrades += tiers.downgrades
    return CloseReport(month, bonus_lines, tiers.upgrades, tiers.downgrades, first)


def close_due_month(program: Program, now: datetime | None = None) -> CloseReport | None:
    """The scheduler's step: close the month that just ended, once."""
    now = now or utcnow()
    month = previous_month(now, zone(program))
    if db.session.get(MonthClose, month) is not None:
        return None
    return close_month(program, month, now)


# --- campaigns starting ------------------------------------------------------------------------


def campaign_partner_ids(campaign: Campaign) -> sa.Select:
    """Approved partners a campaign is open to (now)."""
    approved = sa.select(Partner.id).where(Partner.status == PartnerStatus.APPROVED)
    if campaign.audience == CampaignAudience.EVERYONE:
        return approved
    if campaign.audience == CampaignAudience.TIERS:
        ids = [t.id for t in campaign.tiers]
        return approved.where(
            Partner.id.in_(sa.select(PartnerTier.partner_id).where(PartnerTier.tier_id.in_(ids)))
        )
    if campaign.audience == CampaignAudience.TAG:
        return approved.where(
            Partner.id.in_(
                sa.select(partner_tags.c.partner_id).where(partner_tags.c.tag_id == campaign.tag_id)
            )
        )
    return approved.where(
        Partner.id.in_(
            sa.select(campaign_partners.c.partner_id).where(campaign_partners.c.campaign_id == campaign.id)
        )
    )


def product_names(product_ids: list[str]) -> list[str]:
    """Products by the names the team gave them (a product rate's label), else as the shop's id."""
    if not product_ids:
        return []
    labels = dict(
        db.session.execute(
            sa.select(ProductRate.product_id, ProductRate.label).where(
                ProductRate.product_id.in_(product_ids), ProductRate.label.is_not(None)
            )
        ).all()
    )
    return [labels.get(product_id) or product_id for product_id in product_ids]


def campaign_details(campaign: Campaign, currency: str) -> str:
    from portal.formatting import money

    if campaign.reward == CampaignReward.BONUS:
        what = _("a bonus of %(amount)s on every sale", amount=money(campaign.bonus_minor, currency))
    else:
        what = Rate.of(campaign).words(currency)
    if campaign.product_ids:
        products = ", ".join(product_names(campaign.product_ids))
        return _("%(what)s, on %(products)s.", what=what, products=products)
    return _("%(what)s, on every product.", what=what)


def announce_starting_campaigns(program: Program, now: datetime | None = None) -> int:
    """Record ``campaign.started`` for each campaign starting within a day either side of
    ``now``, once per campaign (the event's key); the outbox tells the partners it is open to.
    Returns how many campaigns were announced now."""
    now = now or utcnow()
    campaigns = db.session.scalars(
        sa.select(Campaign)
        .where(Campaign.starts_at <= now + timedelta(days=1), Campaign.starts_at >= now - timedelta(days=1))
        .where(Campaign.ends_at > now)
        .order_by(Campaign.id)
    ).all()
    announced = 0
    for campaign in campaigns:
        event = events.record(
            "campaign.started",
            {"campaign_id": campaign.id, "name": campaign.name, "starts_at": campaign.starts_at.isoformat()},
            key=f"campaign.started:{campaign.id}",
        )
        announced += event is not None
    return announced


# --- "why this amount" -------------------------------------------------------------------------------


def _rate_phrase(explanation: dict[str, Any], currency: str) -> str:
    from portal.formatting import money, percent_bp

    if explanation.get("type") == "percent":
        return _(
            "%(rate)s of %(sale)s",
            rate=percent_bp(explanation.get("rate_bp", 0)),
            sale=money(explanation.get("sale_minor", 0), currency),
        )
    return _("a fixed %(amount)s per sale", amount=money(explanation.get("flat_minor", 0), currency))


def _renewal_phrase(renewal: dict[str, Any] | None) -> str:
    from portal.formatting import day

    if not renewal:
        return ""
    first = datetime.fromisoformat(renewal["first_at"])
    if renewal.get("mode") == RecurringMode.MONTHS:
        return " " + _(
            "A renewal: the customer first bought through you on %(date)s; "
            "renewals earn for %(months)s months.",
            date=day(first),
            months=renewal.get("months"),
        )
    return " " + _("A renewal: the customer first bought through you on %(date)s.", date=day(first))


def explain(line: Commission) -> str:
    """One sentence that says why ``line`` is the amount it is (the partner's "why this amount")."""
    from portal.formatting import day, money, reason_label

    e = line.explanation or {}
    rule = e.get("rule", line.kind)
    currency = line.currency
    outranked = e.get("outranked") or []
    later = ""
    if outranked:
        labels = ", ".join(str(PRECEDENCE_LABELS.get(CommissionKind(k), k)).lower() for k in outranked)
        later = " " + _("It comes before: %(rules)s.", rules=labels)
    if rule == "base":
        return (
            _("Base rate: %(rate)s.", rate=_rate_phrase(e, currency))
            + later
            + _renewal_phrase(e.get("renewal"))
        )
    if rule == "product":
        text = _(
            "Product rate for %(product)s: %(rate)s.",
            product=e.get("product_id"),
            rate=_rate_phrase(e, currency),
        )
        return text + later + _renewal_phrase(e.get("renewal"))
    if rule == "tier":
        text = _("Your tier %(tier)s: %(rate)s.", tier=e.get("tier"), rate=_rate_phrase(e, currency))
        if e.get("reached_with_this_sale"):
            text += " " + _(
                "This sale took you to %(tier)s, so it already earns the new rate.", tier=e.get("tier")
            )
        return text + later + _renewal_phrase(e.get("renewal"))
    if rule == "campaign":
        text = _("Campaign “%(name)s”: %(rate)s.", name=e.get("campaign"), rate=_rate_phrase(e, currency))
        return text + later + _renewal_phrase(e.get("renewal"))
    if rule == "deal":
        text = _("Your private deal: %(rate)s.", rate=_rate_phrase(e, currency))
        return text + later + _renewal_phrase(e.get("renewal"))
    if rule == "campaign_bonus":
        return _(
            "Campaign “%(name)s” bonus: %(amount)s on top for this sale.",
            name=e.get("campaign"),
            amount=money(e.get("bonus_minor", 0), currency),
        )
    if rule == "ladder":
        return _(
            "Monthly ladder for %(month)s: %(count)s conversions reached the %(step)s-conversion step, "
            "worth %(amount)s.",
            month=e.get("month"),
            count=e.get("conversions"),
            step=e.get("step_conversions"),
            amount=money(e.get("bonus_minor", 0), currency),
        )
    if rule == "ladder_reversal":
        if e.get("step_conversions"):
            return _(
                "Order %(order)s no longer counts (%(reason)s): %(month)s now has %(count)s conversions, "
                "the %(step)s-conversion step, worth %(amount)s; the difference is taken back.",
                order=e.get("order"),
                reason=reason_label(line.reason_code),
                month=e.get("month"),
                count=e.get("conversions"),
                step=e.get("step_conversions"),
                amount=money(e.get("entitled_minor", 0), currency),
            )
        return _(
            "Order %(order)s no longer counts (%(reason)s): %(month)s now has %(count)s conversions, "
            "below the first step; the bonus is taken back.",
            order=e.get("order"),
            reason=reason_label(line.reason_code),
            month=e.get("month"),
            count=e.get("conversions"),
        )
    if rule == "renewal_ended":
        renewal = e.get("renewal") or {}
        first = datetime.fromisoformat(renewal["first_at"]) if renewal.get("first_at") else None
        if renewal.get("mode") == RecurringMode.MONTHS:
            return _(
                "A renewal of a customer who first bought through you on %(date)s; renewals earn for "
                "%(months)s months, so this one earns nothing.",
                date=day(first),
                months=renewal.get("months"),
            )
        return _(
            "A renewal of a customer who first bought through you on %(date)s; the program pays on "
            "the first purchase only.",
            date=day(first),
        )
    if rule == "refund":
        total = e.get("reversed_total_minor")
        before = total + line.amount_minor if total is not None else 0
        if before > 0:
            # A later partial refund: the share is of the refunds so far, part of it taken back already.
            return _(
                "%(refunded)s of the %(sale)s sale has been refunded in all, so %(total)s of the "
                "commission is taken back: %(before)s before, %(amount)s now.",
                refunded=money(e.get("refunded_minor", 0), currency),
                sale=money(e.get("sale_minor", 0), currency),
                total=money(total, currency),
                before=money(before, currency),
                amount=money(-line.amount_minor, currency),
            )
        return _(
            "%(refunded)s of the %(sale)s sale was refunded, "
            "so the same share of the commission is taken back.",
            refunded=money(e.get("refunded_minor", 0), currency),
            sale=money(e.get("sale_minor", 0), currency),
        )
    if rule == "rejected":
        return _(
            "The sale was rejected (%(reason)s), so its commission is taken back.",
            reason=reason_label(line.reason_code),
        )
    return reason_label(line.reason_code) if line.reason_code else str(rule)


def describe_tier_change(change: TierChange, program: Program) -> str:
    from portal.formatting import money

    if change.reason == TierChangeReason.MANUAL:
        return _("set by the program team.") + (f" {change.note}" if change.note else "")
    if change.reason == TierChangeReason.TIER_REMOVED:
        return _("the tier was retired.")
    if change.metric_value is None:
        return ""
    figure = (
        money(change.metric_value, program.currency)
        if change.metric == TierMetric.REVENUE
        else _("%(n)s conversions", n=change.metric_value)
    )
    if change.reason == TierChangeReason.THRESHOLD_REACHED:
        return _("you reached %(figure)s (%(window)s).", figure=figure, window=window_words(change.window))
    return _(
        "%(figure)s over %(window)s, below the tier's threshold.",
        figure=figure,
        window=window_words(change.window),
    )


def tier_history(partner_id: int, limit: int = 50) -> list[TierChange]:
    return list(
        db.session.scalars(
            sa.select(TierChange)
            .where(TierChange.partner_id == partner_id)
            .order_by(TierChange.created_at.desc(), TierChange.id.desc())
            .limit(limit)
        )
    )


def partner_ids_in_tiers(tier_ids: Iterable[int]) -> sa.Select:
    return sa.select(PartnerTier.partner_id).where(PartnerTier.tier_id.in_(list(tier_ids)))


# --- announcements to tiers ----------------------------------------------------------------------


def _parse_tier_names(items: list[str]) -> list[int]:
    if not items:
        raise DomainError(_("Name at least one tier."), "tiers")
    by_name = {t.name.lower(): t.id for t in all_tiers()}
    unknown = [item for item in items if item.strip().lower() not in by_name]
    if unknown:
        raise DomainError(_("There is no tier called: %(names)s.", names=", ".join(unknown)), "tiers")
    return list(dict.fromkeys(by_name[item.strip().lower()] for item in items))


def _tier_audience_ids(keys: list) -> sa.Select:
    return sa.select(Partner.id).where(
        Partner.status == PartnerStatus.APPROVED, Partner.id.in_(partner_ids_in_tiers(keys))
    )


def tier_names(tier_ids: Iterable[int]) -> list[str]:
    """The names of these tiers, lowest first."""
    return list(db.session.scalars(sa.select(Tier.name).where(Tier.id.in_(tier_ids)).order_by(Tier.rank)))


def _describe_tier_audience(keys: list) -> str:
    return _("partners in the tiers %(tiers)s", tiers=", ".join(tier_names(keys)) or "—")


def _register_tier_audience() -> None:
    from portal.services.announcements import Audience, register_audience

    register_audience(
        Audience(
            "tiers", _l("Partners in a tier"), _parse_tier_names, _tier_audience_ids, _describe_tier_audience
        )
    )


_register_tier_audience()

"""What an operator sees of each partner: figures, balance, payouts, activity, tier and risk.

Read from the rollups (clicks, sales, commission of a period; the last day with activity), the
ledger (the confirmed balance not yet in a payout, from the partners' running totals), the
payout items (the last payment) and the tier rows — for a page of partners in one grouped query
each, never one query per row. The partners list sorts and filters by the same figures: only the
figure it sorts or filters by is joined to the list's query.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import joinedload

from portal.extensions import db
from portal.models import (
    ItemStatus,
    Partner,
    PartnerBalance,
    PartnerDailyStat,
    PartnerTier,
    PayoutItem,
    Tag,
    Tier,
    User,
)
from portal.services.dashboards import DateRange

SORTS = (
    "applied",
    "name",
    "clicks",
    "sales",
    "commission",
    "balance",
    "last_payout",
    "last_activity",
    "tier",
)
DEFAULT_SORT = "applied"
ACTIVITY_FILTERS = ("active", "quiet")  # a click or sale in the last QUIET_DAYS days, or none
QUIET_DAYS = 21
PER_PAGE = 25


@dataclass(frozen=True)
class PartnerFilters:
    status: str | None = None
    search: str = ""
    tag: str | None = None
    tier: str | None = None  # a tier id, or "none"
    risk: bool = False  # only partners at risk of leaving
    activity: str | None = None  # "active" or "quiet"
    owed: bool = False  # only partners with a confirmed balance
    sort: str = DEFAULT_SORT
    descending: bool = True


@dataclass
class PartnerFigures:
    """One partner's figures for a period, and what does not depend on the period."""

    clicks: int = 0
    conversions: int = 0  # counted: not rejected
    sales_minor: int = 0
    commission_minor: int = 0
    balance_minor: int = 0  # confirmed, not in a payout yet
    last_payout_on: date | None = None
    last_payout_minor: int | None = None
    last_activity: date | None = None  # the last day with a click or a sale
    tier: str | None = None
    risk: tuple[str, ...] = field(default_factory=tuple)


# --- the pieces, each grouped by partner --------------------------------------------------


def _window(rng: DateRange) -> sa.Subquery:
    table = PartnerDailyStat.__table__
    return (
        sa.select(
            table.c.partner_id,
            sa.func.sum(table.c.clicks).label("clicks"),
            sa.func.sum(table.c.conversions - table.c.conversions_rejected).label("conversions"),
            sa.func.sum(table.c.sales_minor).label("sales_minor"),
            sa.func.sum(table.c.commission_minor).label("commission_minor"),
        )
        .where(table.c.day.between(rng.start, rng.end))
        .group_by(table.c.partner_id)
        .subquery("window")
    )


def _balances() -> sa.Subquery:
    """Each partner's confirmed balance not in a payout yet, from their running totals (one row
    per currency, kept by triggers: ``payouts.confirmed_balance``), not from their lines."""
    unpaid = PartnerBalance.confirmed_minor - PartnerBalance.settled_minor
    return (
        sa.select(PartnerBalance.partner_id, sa.func.sum(unpaid).label("balance_minor"))
        .group_by(PartnerBalance.partner_id)
        .subquery("balances")
    )


def _last_payouts() -> sa.Subquery:
    return (
        sa.select(PayoutItem.partner_id, sa.func.max(PayoutItem.paid_on).label("last_payout_on"))
        .where(PayoutItem.status == ItemStatus.PAID)
        .group_by(PayoutItem.partner_id)
        .subquery("last_payouts")
    )


def _last_activity() -> sa.ScalarSelect:
    """The partner's last day with a click or a sale: one step back through (partner_id, day)."""
    table = PartnerDailyStat.__table__
    return (
        sa.select(table.c.day)
        .where(table.c.partner_id == Partner.id, (table.c.clicks > 0) | (table.c.conversions > 0))
        .order_by(table.c.day.desc())
        .limit(1)
        .correlate(Partner)
        .scalar_subquery()
    )


# --- the list -----------------------------------------------------------------------------


def list_query(
    filters: PartnerFilters, rng: DateRange, today: date, at_risk: set[int] | None = None
) -> sa.Select:
    """Partners matching ``filters``, sorted by the chosen figure (ties: newest application first)."""
    query = sa.select(Partner).join(Partner.user).options(joinedload(Partner.user))
    if filters.status:
        query = query.where(Partner.status == filters.status)
    if filters.tag:
        query = query.where(Partner.tags.any(Tag.name == filters.tag.strip().lower()))
    if filters.search:
        term = f"%{filters.search.strip().lower()}%"
        query = query.where(
            sa.or_(sa.func.lower(User.name).like(term), User.email.like(term), Partner.ref_code.like(term))
        )
    if filters.risk:
        query = query.where(Partner.id.in_(sorted(at_risk or ())))
    if filters.tier == "none":
        query = query.where(~sa.exists().where(PartnerTier.partner_id == Partner.id))
    elif filters.tier:
        query = query.where(
            sa.exists().where(PartnerTier.partner_id == Partner.id, PartnerTier.tier_id == int(filters.tier))
        )
    last_activity = _last_activity()
    if filters.activity:
        cutoff = today - timedelta(days=QUIET_DAYS)
        active = last_activity > cutoff
        query = query.where(
            active if filters.activity == "active" else sa.or_(last_activity.is_(None), ~active)
        )

    balances = None
    if filters.owed or filters.sort == "balance":
        balances = _balances()
        query = query.outerjoin(balances, balances.c.partner_id == Partner.id)
        if filters.owed:
            query = query.where(balances.c.balance_minor > 0)

    order: list = []
    sort = filters.sort if filters.sort in SORTS else DEFAULT_SORT

    def by(column, nulls_low: bool = True):
        column = sa.func.coalesce(column, 0) if nulls_low is True else column
        return column.desc() if filters.descending else column.asc()

    if sort in ("clicks", "sales", "commission"):
        window = _window(rng)
        query = query.outerjoin(window, window.c.partner_id == Partner.id)
        name = {"clicks": "clicks", "sales": "sales_minor", "commission": "commission_minor"}[sort]
        order.append(by(window.c[name]))
    elif sort == "balance":
        order.append(by(balances.c.balance_minor))
    elif sort == "last_payout":
        payouts = _last_payouts()
        query = query.outerjoin(payouts, payouts.c.partner_id == Partner.id)
        column = payouts.c.last_payout_on
        order.append(column.desc().nulls_last() if filters.descending else column.asc().nulls_first())
    elif sort == "last_activity":
        order.append(
            last_activity.desc().nulls_last() if filters.descending else last_activity.asc().nulls_first()
        )
    elif sort == "tier":
        tiers = (
            sa.select(PartnerTier.partner_id, Tier.rank)
            .join(Tier, Tier.id == PartnerTier.tier_id)
            .subquery("tiers")
        )
        query = query.outerjoin(tiers, tiers.c.partner_id == Partner.id)
        order.append(by(tiers.c.rank))
    elif sort == "name":
        order.append(
            sa.func.lower(User.name).desc() if filters.descending else sa.func.lower(User.name).asc()
        )
    else:  # applied: applications oldest first unless asked otherwise
        order.append(Partner.applied_at.desc() if filters.descending else Partner.applied_at.asc())
    tie = Partner.id.desc() if filters.descending else Partner.id.asc()
    return query.order_by(*order, tie)


def figures_for(
    partner_ids: list[int], rng: DateRange, risk: dict[int, tuple[str, ...]] | None = None
) -> dict[int, PartnerFigures]:
    """Every figure of the partners in ``partner_ids`` (a page of the list, or one): a few
    grouped queries, whatever the number of partners."""
    figures = {partner_id: PartnerFigures() for partner_id in partner_ids}
    if not partner_ids:
        return figures
    window = _window(rng)
    for row in db.session.execute(sa.select(window).where(window.c.partner_id.in_(partner_ids))).mappings():
        item = figures[row["partner_id"]]
        item.clicks = int(row["clicks"] or 0)
        item.conversions = int(row["conversions"] or 0)
        item.sales_minor = int(row["sales_minor"] or 0)
        item.commission_minor = int(row["commission_minor"] or 0)
    balances = _balances()
    for partner_id, balance in db.session.execute(
        sa.select(balances).where(balances.c.partner_id.in_(partner_ids))
    ):
        figures[partner_id].balance_minor = int(balance or 0)
    # The last payment of each partner, with its amount (several items paid the same day: summed).
    last = _last_payouts()
    rows = db.session.execute(
        sa.select(PayoutItem.partner_id, PayoutItem.paid_on, sa.func.sum(PayoutItem.amount_minor))
        .join(
            last,
            sa.and_(last.c.partner_id == PayoutItem.partner_id, last.c.last_payout_on == PayoutItem.paid_on),
        )
        .where(PayoutItem.status == ItemStatus.PAID, PayoutItem.partner_id.in_(partner_ids))
        .group_by(PayoutItem.partner_id, PayoutItem.paid_on)
    )
    for partner_id, paid_on, amount in rows:
        figures[partner_id].last_payout_on = paid_on
        figures[partner_id].last_payout_minor = int(amount)
    for partner_id, day in db.session.execute(
        sa.select(Partner.id, _last_activity()).where(Partner.id.in_(partner_ids))
    ):
        figures[partner_id].last_activity = day
    for partner_id, name in db.session.execute(
        sa.select(PartnerTier.partner_id, Tier.name)
        .join(Tier, Tier.id == PartnerTier.tier_id)
        .where(PartnerTier.partner_id.in_(partner_ids))
    ):
        figures[partner_id].tier = name
    for partner_id in partner_ids:
        figures[partner_id].risk = (risk or {}).get(partner_id, ())
    return figures


def all_tiers() -> list[Tier]:
    return list(db.session.scalars(sa.select(Tier).order_by(Tier.rank)))


def waiting_days(applied_at: datetime, today: date, timezone: str) -> int:
    """Whole days an application has waited (0 on the day it came in), in the program's days."""
    from portal.services.rollups import local_day

    return max(0, (today - local_day(applied_at, timezone)).days)

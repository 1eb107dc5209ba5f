"""What the partner's Rewards page shows: tier and progress, the month's ladder, open
campaigns and private deals — read from the rewards engine, scoped to one partner."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

import sqlalchemy as sa
from flask_babel import gettext as _
from flask_babel import ngettext
from sqlalchemy.orm import selectinload

from portal.extensions import db
from portal.models import Campaign, LadderStep, Partner, PrivateDeal, Program, Tier, TierMetric, TierPeriod
from portal.models.types import utcnow
from portal.services import rewards


@dataclass
class TierProgress:
    """How far the partner is toward ``tier`` in the window that can upgrade them now."""

    tier: Tier
    value: int
    threshold: int
    percent: int
    words: str


@dataclass
class LadderProgress:
    month: str
    count: int
    reached: LadderStep | None
    next_step: LadderStep | None
    percent: int
    words: str
    steps: list[LadderStep] = field(default_factory=list)


@dataclass
class OpenCampaign:
    campaign: Campaign
    details: str
    starts: str  # in words, on the program's clock
    ends: str
    running: bool


@dataclass
class Deal:
    deal: PrivateDeal
    rate: str
    starts: str | None  # in words, on the program's clock
    ends: str | None


@dataclass
class RewardsOverview:
    tier: Tier | None
    rate: str
    next_tier: TierProgress | None
    highest: bool
    has_tiers: bool
    ladder: LadderProgress | None
    campaigns: list[OpenCampaign]
    deals: list[Deal]
    timezone: str


def program_time(instant: datetime, program: Program) -> str:
    """An instant as the program's clock shows it, in the viewer's language."""
    from babel.dates import format_datetime
    from flask_babel import get_locale

    return format_datetime(instant, "medium", tzinfo=rewards.zone(program), locale=get_locale() or "en")


def _percent(value: int, threshold: int) -> int:
    if threshold <= 0:
        return 100
    return max(0, min(100, value * 100 // threshold))


def _amount(value: int, metric: str, currency: str) -> str:
    from portal.formatting import money

    if metric == TierMetric.REVENUE:
        return money(value, currency)
    return ngettext("%(num)d sale", "%(num)d sales", value)


def _tier_progress(partner: Partner, program: Program, tier: Tier, now: datetime) -> TierProgress:
    tz = rewards.zone(program)
    # The window that upgrades at once: this month so far, or the last 30 / 90 days — whole
    # days in the program's zone, the days the next sale's upgrade reads.
    first, last, _label = rewards.live_day_windows(tier, now, tz)[0]
    start = rewards.local_to_utc(datetime.combine(first, time.min), tz)
    end = rewards.local_to_utc(datetime.combine(last + timedelta(days=1), time.min), tz)
    value = rewards.metric_of(partner.id, tier.threshold_metric, start, end)
    have = _amount(value, tier.threshold_metric, program.currency)
    need = _amount(tier.threshold_value, tier.threshold_metric, program.currency)
    missing = _amount(max(0, tier.threshold_value - value), tier.threshold_metric, program.currency)
    window = {
        TierPeriod.PREVIOUS_MONTH: _("this month so far"),
        TierPeriod.ROLLING_30: _("in the last 30 days"),
        TierPeriod.ROLLING_90: _("in the last 90 days"),
    }.get(tier.period, "")
    words = _(
        "%(have)s of the %(need)s %(window)s that %(tier)s needs: %(missing)s to go. "
        "%(tier)s pays %(rate)s, from the sale that crosses the line.",
        have=have,
        need=need,
        window=window,
        tier=tier.name,
        missing=missing,
        rate=rewards.tier_rate_words(tier, program),
    )
    return TierProgress(tier, value, tier.threshold_value, _percent(value, tier.threshold_value), words)


def _ladder(partner: Partner, program: Program, now: datetime) -> LadderProgress | None:
    from portal.formatting import money

    steps = rewards.ladder_steps()
    if not steps:
        return None
    tz = rewards.zone(program)
    month = rewards.month_of(now, tz)
    count = rewards.ladder_count(partner.id, month, tz)
    reached = rewards.step_for(count, steps)
    following = next((s for s in steps if s.threshold_conversions > count), None)
    parts = [ngettext("%(num)d sale counted this month.", "%(num)d sales counted this month.", count)]
    if reached is not None:
        parts.append(
            _(
                "You have reached the %(step)d-sale step: %(bonus)s when the month closes.",
                step=reached.threshold_conversions,
                bonus=money(reached.bonus_minor, program.currency),
            )
        )
    if following is not None:
        parts.append(
            ngettext(
                "%(num)d more for the %(step)d-sale step (%(bonus)s).",
                "%(num)d more for the %(step)d-sale step (%(bonus)s).",
                following.threshold_conversions - count,
                step=following.threshold_conversions,
                bonus=money(following.bonus_minor, program.currency),
            )
        )
    else:
        parts.append(_("That is the top step."))
    target = following.threshold_conversions if following else steps[-1].threshold_conversions
    return LadderProgress(month, count, reached, following, _percent(count, target), " ".join(parts), steps)


def _open_campaigns(
    partner: Partner, program: Program, tier: Tier | None, now: datetime
) -> list[OpenCampaign]:
    tag_ids = rewards.partner_tag_ids(partner.id)
    candidates = db.session.scalars(
        sa.select(Campaign)
        .where(Campaign.ends_at > now)
        .options(selectinload(Campaign.tiers), selectinload(Campaign.partners))
        .order_by(Campaign.ends_at, Campaign.id)
    ).all()
    return [
        OpenCampaign(
            c,
            rewards.campaign_details(c, program.currency),
            program_time(c.starts_at, program),
            program_time(c.ends_at, program),
            c.starts_at <= now,
        )
        for c in candidates
        if rewards.campaign_open_to(c, partner.id, tier.id if tier else None, tag_ids)
    ]


def _deals(partner: Partner, program: Program, now: datetime) -> list[Deal]:
    deals = db.session.scalars(
        sa.select(PrivateDeal)
        .where(
            PrivateDeal.partner_id == partner.id,
            sa.or_(PrivateDeal.ends_at.is_(None), PrivateDeal.ends_at > now),
        )
        .order_by(PrivateDeal.id)
    ).all()
    return [
        Deal(
            d,
            rewards.Rate.of(d).words(program.currency),
            program_time(d.starts_at, program) if d.starts_at else None,
            program_time(d.ends_at, program) if d.ends_at else None,
        )
        for d in deals
    ]


def rewards_overview(partner: Partner, program: Program, now: datetime | None = None) -> RewardsOverview:
    now = now or utcnow()
    tier = rewards.current_tier(partner.id)
    tiers = rewards.all_tiers()
    higher = [t for t in tiers if tier is None or t.rank > tier.rank]
    next_tier = _tier_progress(partner, program, higher[0], now) if higher else None
    return RewardsOverview(
        tier=tier,
        rate=rewards.tier_rate_words(tier, program),
        next_tier=next_tier,
        highest=bool(tiers) and not higher,
        has_tiers=bool(tiers),
        ladder=_ladder(partner, program, now),
        campaigns=_open_campaigns(partner, program, tier, now),
        deals=_deals(partner, program, now),
        timezone=program.timezone,
    )

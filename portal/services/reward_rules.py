"""Setting the rewards rules from the operator console: each change checked, saved whole, audited.

Every function refuses bad input with a ``DomainError`` naming the form field, before
anything is written; the view commits once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from flask_babel import gettext as _

from portal import urlcheck
from portal.errors import DomainError
from portal.extensions import db
from portal.models import (
    CHANNELS,
    Campaign,
    CampaignAudience,
    CampaignReward,
    CommissionType,
    LadderStep,
    Link,
    MonthClose,
    Partner,
    PartnerStatus,
    PartnerTier,
    PrivateDeal,
    ProductRate,
    Program,
    RateType,
    RecurringMode,
    Tag,
    Tier,
    TierChangeReason,
    TierMetric,
    TierPeriod,
    User,
)
from portal.models.types import utcnow
from portal.services import links, rewards
from portal.services.audit import record_event

MAX_PRODUCTS = 50


@dataclass
class RateInput:
    type: str
    percent_bp: int | None = None
    flat_minor: int | None = None


def check_rate(rate: RateInput, prefix: str = "rate") -> RateInput:
    """A percent from 0 to 100 % or a flat amount of zero or more."""
    if rate.type not in (RateType.PERCENT, RateType.FLAT):
        raise DomainError(_("Choose a percent of the sale or a fixed amount."), f"{prefix}_type")
    if rate.type == RateType.PERCENT:
        if rate.percent_bp is None:
            raise DomainError(_("Enter the percent, e.g. 12.5."), f"{prefix}_percent")
        if rate.percent_bp < 0:
            raise DomainError(_("A rate cannot be negative."), f"{prefix}_percent")
        if rate.percent_bp > 10_000:
            raise DomainError(_("A rate cannot be over 100 %."), f"{prefix}_percent")
        return RateInput(RateType.PERCENT, rate.percent_bp, 0)
    if rate.flat_minor is None:
        raise DomainError(_("Enter the amount per sale, e.g. 5.00."), f"{prefix}_flat")
    if rate.flat_minor < 0:
        raise DomainError(_("The amount cannot be negative."), f"{prefix}_flat")
    return RateInput(RateType.FLAT, 0, rate.flat_minor)


def _apply_rate(target: Any, rate: RateInput) -> None:
    target.rate_type = rate.type
    target.rate_percent_bp = rate.percent_bp or 0
    target.rate_flat_minor = rate.flat_minor or 0


def _rate_of(target: Any) -> dict[str, Any]:
    if isinstance(target, RateInput):
        return {"type": target.type, "percent_bp": target.percent_bp, "flat_minor": target.flat_minor}
    return {
        "type": target.rate_type,
        "percent_bp": target.rate_percent_bp,
        "flat_minor": target.rate_flat_minor,
    }


def clean_products(items: list[str]) -> list[str]:
    products = list(dict.fromkeys(item.strip() for item in items if item.strip()))
    if len(products) > MAX_PRODUCTS:
        raise DomainError(_("At most %(n)s products.", n=MAX_PRODUCTS), "products")
    too_long = [p for p in products if len(p) > 128]
    if too_long:
        raise DomainError(_("A product id has at most 128 characters."), "products")
    return products


def find_partner(key: str, field_name: str = "partner") -> Partner:
    """An approved partner by partner code or e-mail."""
    text = (key or "").strip().lower()
    if not text:
        raise DomainError(_("Enter the partner's code or e-mail."), field_name)
    partner = db.session.scalars(
        sa.select(Partner).join(Partner.user).where(sa.or_(Partner.ref_code == text, User.email == text))
    ).first()
    if partner is None or partner.status != PartnerStatus.APPROVED:
        raise DomainError(
            _("No approved partner has the code or e-mail “%(key)s”.", key=key.strip()), field_name
        )
    return partner


# --- the commission plan -------------------------------------------------------------------------


@dataclass
class PlanInput:
    rate: RateInput
    recurring_mode: str = RecurringMode.FOREVER
    recurring_months: int | None = None
    top_partner_tag: str | None = None


def plan_of(program: Program) -> dict[str, Any]:
    return {
        "commission_type": program.commission_type,
        "commission_percent_bp": program.commission_percent_bp,
        "commission_flat_minor": program.commission_flat_minor,
        "recurring_mode": program.recurring_mode,
        "recurring_months": program.recurring_months,
        "top_partner_tag": program.top_partner_tag,
    }


def save_plan(program: Program, actor: User, plan: PlanInput) -> Program:
    rate = check_rate(plan.rate)
    if plan.recurring_mode not in set(RecurringMode):
        raise DomainError(_("Choose how renewals earn."), "recurring_mode")
    months = None
    if plan.recurring_mode == RecurringMode.MONTHS:
        if plan.recurring_months is None or not 1 <= plan.recurring_months <= 120:
            raise DomainError(_("Renewals can earn for 1 to 120 months."), "recurring_months")
        months = plan.recurring_months
    tag = None
    if plan.top_partner_tag and plan.top_partner_tag.strip():
        from portal.services.announcements import normalise_tag

        try:
            tag = normalise_tag(plan.top_partner_tag)
        except DomainError as error:
            raise DomainError(error.message, "top_partner_tag") from None
    before = plan_of(program)
    if rate.type == RateType.PERCENT:
        program.commission_type = CommissionType.PERCENT
        program.commission_percent_bp = rate.percent_bp or 0
    else:
        program.commission_type = CommissionType.FLAT
        program.commission_flat_minor = rate.flat_minor or 0
    program.recurring_mode = plan.recurring_mode
    program.recurring_months = months
    program.top_partner_tag = tag
    db.session.flush()
    after = plan_of(program)
    if after != before:  # an unchanged save writes nothing to the audit log
        record_event(actor, "rewards.plan_changed", "program", program.id, before=before, after=after)
    return program


# --- product rates ----------------------------------------------------------------------------------


@dataclass
class ProductRateInput:
    product_id: str
    rate: RateInput
    label: str | None = None


def save_product_rate(
    actor: User, data: ProductRateInput, existing: ProductRate | None = None
) -> ProductRate:
    product_id = (data.product_id or "").strip()
    if not product_id:
        raise DomainError(_("Enter the product id your shop sends."), "product_id")
    if len(product_id) > 128:
        raise DomainError(_("A product id has at most 128 characters."), "product_id")
    rate = check_rate(data.rate)
    clash = db.session.scalar(sa.select(ProductRate).where(ProductRate.product_id == product_id))
    if clash is not None and clash is not existing:
        raise DomainError(
            _("Product %(id)s already has its own rate; edit that one.", id=product_id), "product_id"
        )
    before = _rate_of(existing) if existing else None
    unchanged = existing is not None and (existing.product_id, existing.label, before) == (
        product_id,
        (data.label or "").strip()[:120] or None,
        _rate_of(RateInput(rate.type, rate.percent_bp or 0, rate.flat_minor or 0)),
    )
    if unchanged:
        return existing
    product_rate = existing or ProductRate()
    product_rate.product_id = product_id
    product_rate.label = (data.label or "").strip()[:120] or None
    _apply_rate(product_rate, rate)
    db.session.add(product_rate)
    db.session.flush()
    record_event(
        actor,
        "rewards.product_rate_saved",
        "product_rate",
        product_rate.id,
        product_id=product_id,
        before=before,
        after=_rate_of(product_rate),
    )
    return product_rate


def delete_product_rate(actor: User, product_rate: ProductRate) -> None:
    record_event(
        actor,
        "rewards.product_rate_deleted",
        "product_rate",
        product_rate.id,
        product_id=product_rate.product_id,
        before=_rate_of(product_rate),
    )
    db.session.delete(product_rate)
    db.session.flush()


# --- tiers ----------------------------------------------------------------------------------------------


@dataclass
class TierInput:
    name: str
    rank: int
    rate: RateInput
    threshold_metric: str
    threshold_value: int
    period: str
    can_request_campaigns: bool = False


def _tier_snapshot(tier: Tier) -> dict[str, Any]:
    return {
        "name": tier.name,
        "rank": tier.rank,
        "rate": _rate_of(tier),
        "threshold_metric": tier.threshold_metric,
        "threshold_value": tier.threshold_value,
        "period": tier.period,
        "can_request_campaigns": tier.can_request_campaigns,
    }


def _threshold_words(value: int, metric: str, currency: str) -> str:
    from portal.formatting import money

    if metric == TierMetric.REVENUE:
        return money(value, currency)
    return _("%(n)s conversions", n=value)


def save_tier(program: Program, actor: User, data: TierInput, tier: Tier | None = None) -> Tier:
    name = " ".join((data.name or "").split())
    if not name:
        raise DomainError(_("Name the tier, e.g. Silver."), "name")
    if len(name) > 60:
        raise DomainError(_("At most 60 characters."), "name")
    if data.rank is None or data.rank < 1:
        raise DomainError(_("The level is a whole number from 1 (the lowest)."), "rank")
    if data.threshold_metric not in set(TierMetric):
        raise DomainError(_("Choose what the threshold counts."), "threshold_metric")
    if data.period not in set(TierPeriod):
        raise DomainError(_("Choose the period the threshold is counted over."), "period")
    if data.threshold_value is None or data.threshold_value < 0:
        raise DomainError(_("The threshold cannot be negative."), "threshold")
    rate = check_rate(data.rate)
    others = [t for t in rewards.all_tiers() if t is not tier]
    same_name = next((t for t in others if t.name.lower() == name.lower()), None)
    if same_name is not None:
        raise DomainError(_("There is already a tier called %(name)s.", name=same_name.name), "name")
    if any(t.rank == data.rank for t in others):
        raise DomainError(_("Another tier already has level %(rank)s.", rank=data.rank), "rank")
    same_metric = [t for t in others if t.threshold_metric == data.threshold_metric]
    below = [t for t in same_metric if t.rank < data.rank]
    above = [t for t in same_metric if t.rank > data.rank]
    if below:
        lower = max(below, key=lambda t: t.rank)
        if data.threshold_value <= lower.threshold_value:
            raise DomainError(
                _(
                    "%(name)s must need more than %(lower)s, the tier below it (%(value)s).",
                    name=name,
                    lower=lower.name,
                    value=_threshold_words(lower.threshold_value, lower.threshold_metric, program.currency),
                ),
                "threshold",
            )
    if above:
        higher = min(above, key=lambda t: t.rank)
        if data.threshold_value >= higher.threshold_value:
            raise DomainError(
                _(
                    "%(name)s must need less than %(higher)s, the tier above it (%(value)s).",
                    name=name,
                    higher=higher.name,
                    value=_threshold_words(higher.threshold_value, higher.threshold_metric, program.currency),
                ),
                "threshold",
            )
    before = _tier_snapshot(tier) if tier else None
    tier = tier or Tier()
    tier.name = name
    tier.rank = data.rank
    _apply_rate(tier, rate)
    tier.threshold_metric = data.threshold_metric
    tier.threshold_value = data.threshold_value
    tier.period = data.period
    tier.can_request_campaigns = bool(data.can_request_campaigns)
    db.session.add(tier)
    db.session.flush()
    after = _tier_snapshot(tier)
    if after != before:
        record_event(actor, "rewards.tier_saved", "tier", tier.id, before=before, after=after)
    return tier


def delete_tier(program: Program, actor: User, tier: Tier) -> int:
    """Retire a tier: its partners go back to the base rate (each gets a timeline entry)."""
    holders = db.session.scalars(sa.select(PartnerTier).where(PartnerTier.tier_id == tier.id)).all()
    now = utcnow()
    for held in holders:
        rewards.set_tier(
            program, held.partner, None, reason=TierChangeReason.TIER_REMOVED, since=now, actor=actor
        )
    record_event(
        actor, "rewards.tier_deleted", "tier", tier.id, before=_tier_snapshot(tier), partners=len(holders)
    )
    db.session.delete(tier)
    db.session.flush()
    return len(holders)


def campaigns_only_for(tier: Tier) -> list[Campaign]:
    """Campaigns not yet ended whose one tier is this one: deleting it leaves them open to nobody."""
    live = sa.select(Campaign).where(Campaign.audience == CampaignAudience.TIERS, Campaign.ends_at > utcnow())
    found = db.session.scalars(live.where(Campaign.tiers.any(Tier.id == tier.id)).order_by(Campaign.id))
    return [campaign for campaign in found if len(campaign.tiers) == 1]


def set_partner_tier(
    program: Program, actor: User, partner: Partner, tier: Tier | None, note: str | None
) -> None:
    """An operator puts a partner in a tier by hand (the timeline says so)."""
    change = rewards.set_tier(
        program, partner, tier, reason=TierChangeReason.MANUAL, since=utcnow(), actor=actor, note=note
    )
    if change is not None:
        record_event(
            actor,
            "rewards.partner_tier_set",
            "partner",
            partner.id,
            tier=tier.name if tier else None,
            note=note,
        )


# --- campaigns ------------------------------------------------------------------------------------------


@dataclass
class CampaignInput:
    name: str
    starts_local: datetime | None
    ends_local: datetime | None
    reward: str = CampaignReward.RATE
    rate: RateInput | None = None
    bonus_minor: int | None = None
    product_ids: list[str] = field(default_factory=list)
    audience: str = CampaignAudience.EVERYONE
    tier_ids: list[int] = field(default_factory=list)
    tag: str | None = None
    partner_keys: list[str] = field(default_factory=list)
    links_only: bool = False
    landing_url: str | None = None
    description: str | None = None


def _campaign_snapshot(campaign: Campaign) -> dict[str, Any]:
    return {
        "name": campaign.name,
        "description": campaign.description,
        "starts_at": campaign.starts_at.isoformat(),
        "ends_at": campaign.ends_at.isoformat(),
        "product_ids": list(campaign.product_ids or []),
        "reward": campaign.reward,
        "rate": _rate_of(campaign),
        "bonus_minor": campaign.bonus_minor,
        "audience": campaign.audience,
        "tiers": sorted(t.id for t in campaign.tiers),
        "tag_id": campaign.tag_id,
        "partners": sorted(p.id for p in campaign.partners),
        "links_only": campaign.links_only,
        "landing_url": campaign.landing_url,
    }


def _audience_key(audience: str, tier_ids: list[int], tag_id: int | None, partner_ids: list[int]) -> tuple:
    if audience == CampaignAudience.TIERS:
        return (audience, frozenset(tier_ids))
    if audience == CampaignAudience.TAG:
        return (audience, tag_id)
    if audience == CampaignAudience.PARTNERS:
        return (audience, frozenset(partner_ids))
    return (audience,)


def _products_overlap(a: list[str], b: list[str]) -> bool:
    return not a or not b or bool(set(a) & set(b))


def check_landing_url(program: Program, url: str | None, field_name: str = "landing_url") -> str | None:
    url = (url or "").strip()
    if not url:
        return None
    checked = urlcheck.checked_destination(url, program.allowed_domains or [])
    if checked is None:
        raise DomainError(
            _(
                "The landing page must be an http(s) address on one of the program's allowed "
                "domains: %(domains)s.",
                domains=", ".join(program.allowed_domains or []) or "—",
            ),
            field_name,
        )
    return checked


def _typed_instant(local: datetime, stored: datetime | None, tz) -> datetime:
    """A campaign's start or end as typed in the program's zone. The form shows the stored
    instant to the minute: sent back as shown, it keeps the stored instant (the seconds of
    "end now" or of an approval, and which of an autumn's repeated hours it was)."""
    if stored is not None and local.tzinfo is None:
        shown = rewards.utc_to_local(stored, tz)
        if local in (shown, shown.replace(second=0, microsecond=0)):
            return stored
    return rewards.local_to_utc(local, tz)


def save_campaign(
    program: Program, actor: User, data: CampaignInput, campaign: Campaign | None = None
) -> Campaign:
    """Create or change a campaign; dates are wall-clock times in the program's time zone."""
    from portal.formatting import when
    from portal.services.announcements import _parse_partners, normalise_tag

    name = " ".join((data.name or "").split())
    if not name:
        raise DomainError(_("Name the campaign."), "name")
    if len(name) > 120:
        raise DomainError(_("At most 120 characters."), "name")
    if data.starts_local is None:
        raise DomainError(_("Enter when the campaign starts."), "starts_at")
    if data.ends_local is None:
        raise DomainError(_("Enter when the campaign ends."), "ends_at")
    tz = rewards.zone(program)
    starts_at = _typed_instant(data.starts_local, campaign.starts_at if campaign else None, tz)
    ends_at = _typed_instant(data.ends_local, campaign.ends_at if campaign else None, tz)
    if ends_at <= starts_at:
        raise DomainError(_("The campaign must end after it starts."), "ends_at")
    if data.reward not in set(CampaignReward):
        raise DomainError(_("Choose a rate or a bonus per conversion."), "reward")
    rate = RateInput(RateType.PERCENT, 0, 0)
    bonus = 0
    if data.reward == CampaignReward.RATE:
        rate = check_rate(data.rate or RateInput(""))
    else:
        if data.bonus_minor is None or data.bonus_minor <= 0:
            raise DomainError(_("Enter the bonus per conversion, more than zero."), "bonus")
        bonus = data.bonus_minor
    products = clean_products(data.product_ids)
    if data.audience not in set(CampaignAudience):
        raise DomainError(_("Choose who the campaign is for."), "audience")
    tiers: list[Tier] = []
    tag: Tag | None = None
    partner_ids: list[int] = []
    if data.audience == CampaignAudience.TIERS:
        tiers = list(db.session.scalars(sa.select(Tier).where(Tier.id.in_(data.tier_ids or [-1]))))
        if not tiers:
            raise DomainError(_("Choose at least one tier."), "tiers")
    elif data.audience == CampaignAudience.TAG:
        try:
            tag_name = normalise_tag(data.tag or "") if (data.tag or "").strip() else ""
        except DomainError as error:
            raise DomainError(error.message, "tag") from None
        if not tag_name:
            raise DomainError(_("Enter the tag."), "tag")
        tag = db.session.scalar(sa.select(Tag).where(Tag.name == tag_name))
        if tag is None:
            raise DomainError(_("No partner has the tag “%(tag)s”.", tag=tag_name), "tag")
    elif data.audience == CampaignAudience.PARTNERS:
        partner_ids = _parse_partners(data.partner_keys)
    landing_url = check_landing_url(program, data.landing_url)

    mine = _audience_key(data.audience, [t.id for t in tiers], tag.id if tag else None, partner_ids)
    others = db.session.scalars(
        sa.select(Campaign)
        .where(Campaign.starts_at < ends_at, Campaign.ends_at > starts_at)
        .order_by(Campaign.id)
    ).all()
    for other in others:
        if other is campaign:
            continue
        theirs = _audience_key(
            other.audience, [t.id for t in other.tiers], other.tag_id, [p.id for p in other.partners]
        )
        # Link-only campaigns pay only through their own links, and a sale comes through one
        # link, so two of them never compete (a top partner may hold several custom campaigns).
        both_link_only = bool(data.links_only) and other.links_only
        if theirs == mine and _products_overlap(products, other.product_ids or []) and not both_link_only:
            raise DomainError(
                _(
                    "This overlaps “%(name)s” (%(start)s – %(end)s): the same audience and products at the "
                    "same time. Change the dates, the products or the audience.",
                    name=other.name,
                    start=when(rewards.utc_to_local(other.starts_at, tz), "short"),
                    end=when(rewards.utc_to_local(other.ends_at, tz), "short"),
                ),
                "starts_at",
            )

    before = _campaign_snapshot(campaign) if campaign else None
    old_landing = campaign.landing_url if campaign else None
    campaign = campaign or Campaign(created_by_id=actor.id)
    campaign.name = name
    campaign.description = (data.description or "").strip() or None
    campaign.starts_at = starts_at
    campaign.ends_at = ends_at
    campaign.product_ids = products
    campaign.reward = data.reward
    _apply_rate(campaign, rate)
    campaign.bonus_minor = bonus
    campaign.audience = data.audience
    campaign.tiers = tiers
    campaign.tag = tag
    campaign.tag_id = tag.id if tag else None
    campaign.partners = (
        list(db.session.scalars(sa.select(Partner).where(Partner.id.in_(partner_ids)))) if partner_ids else []
    )
    campaign.links_only = bool(data.links_only)
    campaign.landing_url = landing_url
    db.session.add(campaign)
    db.session.flush()
    if before is not None and old_landing != landing_url:
        # Links are watched by portal.lookups: every worker's cached redirect sees the change.
        for link in campaign_links(campaign):
            link.destination_url = landing_url
    after = _campaign_snapshot(campaign)
    if after != before:
        record_event(actor, "rewards.campaign_saved", "campaign", campaign.id, before=before, after=after)
    return campaign


def campaign_links(campaign: Campaign) -> list[Link]:
    return list(db.session.scalars(sa.select(Link).where(Link.campaign_id == campaign.id).order_by(Link.id)))


def create_campaign_link(
    program: Program, actor: User, campaign: Campaign, partner_key: str, label: str | None, channel: str
) -> Link:
    """A tracking link of ``campaign`` for one partner it is open to."""
    partner = find_partner(partner_key)
    tier = rewards.current_tier(partner.id)
    if not rewards.campaign_open_to(
        campaign, partner.id, tier.id if tier else None, rewards.partner_tag_ids(partner.id)
    ):
        raise DomainError(_("This campaign is not open to %(name)s.", name=partner.user.name), "partner")
    if channel not in CHANNELS:
        raise DomainError(_("Choose a channel."), "channel")
    link = links.create_link(
        partner,
        program,
        label=(label or "").strip()[:120] or campaign.name[:120],
        channel=channel,
        destination_url=campaign.landing_url,
    )
    link.campaign_id = campaign.id
    db.session.flush()
    record_event(
        actor,
        "rewards.campaign_link_created",
        "campaign",
        campaign.id,
        link_id=link.id,
        partner_id=partner.id,
    )
    return link


def delete_campaign(actor: User, campaign: Campaign, now: datetime | None = None) -> None:
    """Only a campaign that has not started can be deleted; a running one is ended instead."""
    now = now or utcnow()
    if campaign.starts_at <= now:
        raise DomainError(_("A campaign that has started cannot be deleted; end it now instead."))
    record_event(
        actor, "rewards.campaign_deleted", "campaign", campaign.id, before=_campaign_snapshot(campaign)
    )
    for link in campaign_links(campaign):
        link.campaign_id = None
    db.session.delete(campaign)
    db.session.flush()


def end_campaign(actor: User, campaign: Campaign, now: datetime | None = None) -> Campaign:
    now = now or utcnow()
    if campaign.ends_at <= now:
        raise DomainError(_("This campaign has already ended."))
    if campaign.starts_at > now:
        raise DomainError(_("This campaign has not started; delete it instead."))
    before = campaign.ends_at
    campaign.ends_at = now
    db.session.flush()
    record_event(
        actor,
        "rewards.campaign_ended",
        "campaign",
        campaign.id,
        before=before.isoformat(),
        after=now.isoformat(),
    )
    return campaign


# --- the monthly ladder -----------------------------------------------------------------------------------


def add_ladder_step(actor: User, threshold_conversions: int | None, bonus_minor: int | None) -> LadderStep:
    if threshold_conversions is None or threshold_conversions < 1:
        raise DomainError(_("A step starts at 1 conversion or more."), "threshold_conversions")
    if bonus_minor is None or bonus_minor <= 0:
        raise DomainError(_("Enter the bonus, more than zero."), "bonus")
    steps = rewards.ladder_steps()
    if any(s.threshold_conversions == threshold_conversions for s in steps):
        raise DomainError(
            _("There is already a step at %(n)s conversions.", n=threshold_conversions),
            "threshold_conversions",
        )
    below = [s for s in steps if s.threshold_conversions < threshold_conversions]
    above = [s for s in steps if s.threshold_conversions > threshold_conversions]
    if below and bonus_minor <= below[-1].bonus_minor:
        raise DomainError(
            _(
                "A step for more conversions must pay more than the step below it (%(n)s conversions).",
                n=below[-1].threshold_conversions,
            ),
            "bonus",
        )
    if above and bonus_minor >= above[0].bonus_minor:
        raise DomainError(
            _(
                "A step for fewer conversions must pay less than the step above it (%(n)s conversions).",
                n=above[0].threshold_conversions,
            ),
            "bonus",
        )
    step = LadderStep(threshold_conversions=threshold_conversions, bonus_minor=bonus_minor)
    db.session.add(step)
    db.session.flush()
    record_event(
        actor,
        "rewards.ladder_step_added",
        "ladder_step",
        step.id,
        threshold=threshold_conversions,
        bonus_minor=bonus_minor,
    )
    return step


def delete_ladder_step(actor: User, step: LadderStep) -> None:
    record_event(
        actor,
        "rewards.ladder_step_deleted",
        "ladder_step",
        step.id,
        threshold=step.threshold_conversions,
        bonus_minor=step.bonus_minor,
    )
    db.session.delete(step)
    db.session.flush()


# --- private deals ------------------------------------------------------------------------------------------


@dataclass
class DealInput:
    partner_key: str
    rate: RateInput
    product_ids: list[str] = field(default_factory=list)
    starts_on: date | None = None
    ends_on: date | None = None  # the last day the deal applies (inclusive)
    note: str | None = None


def _deal_snapshot(deal: PrivateDeal) -> dict[str, Any]:
    return {
        "partner_id": deal.partner_id,
        "rate": _rate_of(deal),
        "product_ids": list(deal.product_ids or []),
        "starts_at": deal.starts_at.isoformat() if deal.starts_at else None,
        "ends_at": deal.ends_at.isoformat() if deal.ends_at else None,
        "note": deal.note,
    }


def save_deal(program: Program, actor: User, data: DealInput, deal: PrivateDeal | None = None) -> PrivateDeal:
    partner = find_partner(data.partner_key) if deal is None else deal.partner
    rate = check_rate(data.rate)
    products = clean_products(data.product_ids)
    if data.starts_on and data.ends_on and data.ends_on < data.starts_on:
        raise DomainError(_("The deal must end on or after the day it starts."), "ends_on")
    tz = rewards.zone(program)
    before = _deal_snapshot(deal) if deal else None
    deal = deal or PrivateDeal(partner_id=partner.id, created_by_id=actor.id)
    _apply_rate(deal, rate)
    deal.product_ids = products
    deal.starts_at = (
        rewards.local_to_utc(datetime.combine(data.starts_on, time.min), tz) if data.starts_on else None
    )
    deal.ends_at = (
        rewards.local_to_utc(datetime.combine(data.ends_on + timedelta(days=1), time.min), tz)
        if data.ends_on
        else None
    )
    deal.note = (data.note or "").strip() or None
    db.session.add(deal)
    db.session.flush()
    after = _deal_snapshot(deal)
    if after != before:
        record_event(
            actor, "rewards.deal_saved", "partner", partner.id, deal_id=deal.id, before=before, after=after
        )
    return deal


def delete_deal(actor: User, deal: PrivateDeal) -> None:
    record_event(
        actor,
        "rewards.deal_deleted",
        "partner",
        deal.partner_id,
        deal_id=deal.id,
        before=_deal_snapshot(deal),
    )
    db.session.delete(deal)
    db.session.flush()


# --- what the console lists -------------------------------------------------------------------


def product_rates() -> list[ProductRate]:
    return list(db.session.scalars(sa.select(ProductRate).order_by(ProductRate.product_id)))


def campaigns_newest_first() -> list[Campaign]:
    return list(
        db.session.scalars(sa.select(Campaign).order_by(Campaign.starts_at.desc(), Campaign.id.desc()))
    )


def month_closes(limit: int | None = None) -> list[MonthClose]:
    """Closed months, the latest first."""
    return list(db.session.scalars(sa.select(MonthClose).order_by(MonthClose.month.desc()).limit(limit)))


def partners_per_tier() -> dict[int, int]:
    return dict(
        db.session.execute(
            sa.select(PartnerTier.tier_id, sa.func.count()).group_by(PartnerTier.tier_id)
        ).all()
    )


def deals(partner_id: int | None = None) -> list[PrivateDeal]:
    """Private deals, the newest first; one partner's when ``partner_id`` is given."""
    query = sa.select(PrivateDeal).order_by(PrivateDeal.id.desc())
    if partner_id is not None:
        query = query.where(PrivateDeal.partner_id == partner_id)
    return list(db.session.scalars(query))

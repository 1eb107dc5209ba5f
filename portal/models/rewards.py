"""Commission lines (an append-only ledger) and the rules that decide them.

The ledger's database triggers (migration 0011; autogenerate does not see triggers, so
they are listed here). Each refuses the write with an integrity error on SQLite and
PostgreSQL; none fires on INSERT, and payout_lines has none (settlement writes 1M rows):

- ``ledger_commissions_money_fixed``: a line's amount_minor, currency, partner_id,
  conversion_id, kind, reverses_id and period are never updated;
- ``ledger_commissions_confirmed_fixed``: a confirmed line keeps its status, confirmed_at
  and confirm_after;
- ``ledger_conversions_money_fixed``: a conversion's amount_minor, currency and
  transaction_id never change, refunded_minor never decreases, rejected stays rejected;
- ``ledger_refunds_fixed``: a refund's conversion, refund_id, amount, currency and
  fingerprint never change (its stored answer may be written after it);
- ``ledger_payout_items_settled``: a paid or failed item's status, reference, paid_on and
  failure_reason never change (a paid item is never paid again or failed);
- ``ledger_payout_items_money_fixed``: an item's amount, currency, partner and batch never
  change unless it is held (a held item is recomputed when released);
- ``ledger_{commissions,conversions,refunds,payout_items}_no_delete``: never deleted.

What the database cannot hold cheaply (a conversion's net commission, an item equal to its
lines, balances, audit events) ``portal.services.ledger.check_ledger`` checks.

The rules, in precedence order: a private deal, then a campaign, then a product
override, then the partner's tier, then the program's base rate (on ``Program``).
Bonuses (a campaign's fixed bonus per conversion, the monthly ladder) stack on top.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models.accounts import Partner, User
from portal.models.tracking import _REASON_CHECK, Conversion
from portal.models.types import UTCDateTime, utcnow


class CommissionKind(enum.StrEnum):
    # An earning line is named after the rule that set its rate.
    BASE = "base"
    PRODUCT = "product"
    TIER = "tier"
    CAMPAIGN = "campaign"
    DEAL = "deal"
    # On top: a campaign's fixed bonus per conversion, or a month's ladder bonus (no conversion).
    BONUS = "bonus"
    REVERSAL = "reversal"  # taken back before the line was paid out
    CLAWBACK = "clawback"  # taken back after it was in a payout; the next batch nets it off


CORRECTION_KINDS = frozenset({CommissionKind.REVERSAL, CommissionKind.CLAWBACK})
EARNING_KINDS = frozenset(k for k in CommissionKind if k not in CORRECTION_KINDS)
RATE_KINDS = frozenset(
    {
        CommissionKind.BASE,
        CommissionKind.PRODUCT,
        CommissionKind.TIER,
        CommissionKind.CAMPAIGN,
        CommissionKind.DEAL,
    }
)

_KIND_CHECK = "kind IN (" + ", ".join(f"'{k.value}'" for k in CommissionKind) + ")"


class CommissionStatus(enum.StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"


class RateType(enum.StrEnum):
    PERCENT = "percent"  # basis points of the sale amount: 1000 = 10.00 %
    FLAT = "flat"  # minor units per conversion


def _rate_checks(prefix: str = "rate", nullable: bool = False) -> tuple[sa.CheckConstraint, ...]:
    """A rate is a type plus a percent (0-100 %) or a flat amount (>= 0)."""
    kind, pct, flat = f"{prefix}_type", f"{prefix}_percent_bp", f"{prefix}_flat_minor"
    null_ok = f"{kind} IS NULL OR " if nullable else ""
    return (
        sa.CheckConstraint(f"{null_ok}{kind} IN ('percent', 'flat')", name=f"{prefix}_type_known"),
        sa.CheckConstraint(f"{pct} IS NULL OR {pct} BETWEEN 0 AND 10000", name=f"{prefix}_percent_range"),
        sa.CheckConstraint(f"{flat} IS NULL OR {flat} >= 0", name=f"{prefix}_flat_positive"),
    )


class Commission(db.Model):
    """One line of a partner's earnings. Never edited once confirmed: corrections are new lines.

    A line belongs to a conversion, except a month's ladder bonus, which belongs to the
    partner and the month (``period``, YYYY-MM in the program's time zone); the unique
    (partner, period) pair means a month's ladder bonus is written once at most. Its
    reversals point at it through ``reverses_id`` and leave ``period`` empty.
    """

    __tablename__ = "commissions"
    __table_args__ = (
        sa.CheckConstraint(_KIND_CHECK, name="kind_known"),
        sa.CheckConstraint("status IN ('pending', 'confirmed')", name="status_known"),
        sa.CheckConstraint("length(currency) = 3", name="currency_iso"),
        sa.CheckConstraint(f"reason_code IS NULL OR reason_code {_REASON_CHECK}", name="reason_known"),
        sa.CheckConstraint(
            "kind NOT IN ('reversal', 'clawback') OR (reason_code IS NOT NULL AND amount_minor <= 0)",
            name="correction_rules",
        ),
        sa.CheckConstraint(
            "kind IN ('reversal', 'clawback') OR amount_minor >= 0", name="earning_not_negative"
        ),
        # A correction always names the line it takes back; an earning line never does.
        sa.CheckConstraint(
            "(kind IN ('reversal', 'clawback')) = (reverses_id IS NOT NULL)", name="correction_has_target"
        ),
        sa.CheckConstraint(
            "period IS NULL OR (kind = 'bonus' AND conversion_id IS NULL)", name="period_is_ladder"
        ),
        sa.CheckConstraint(
            "conversion_id IS NOT NULL OR period IS NOT NULL OR reverses_id IS NOT NULL",
            name="line_has_subject",
        ),
        sa.UniqueConstraint("partner_id", "period", name="uq_commissions_ladder_month"),
        # Covers a partner's balance by status, date and currency: settlement sums 1M lines
        # from the index alone (in partner order) instead of looking up each row.
        sa.Index(
            "ix_commissions_partner_status",
            "partner_id",
            "status",
            "confirm_after",
            "currency",
            "amount_minor",
        ),
        # Only pending lines wait for their hold to end; confirmed ones are never looked up by date.
        sa.Index(
            "ix_commissions_pending_due",
            "confirm_after",
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conversion_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("conversions.id", ondelete="RESTRICT"), index=True
    )
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partners.id", ondelete="RESTRICT"))
    kind: Mapped[str] = mapped_column(sa.String(16))
    amount_minor: Mapped[int]
    currency: Mapped[str] = mapped_column(sa.String(3))
    status: Mapped[str] = mapped_column(sa.String(16), default=CommissionStatus.PENDING)
    confirm_after: Mapped[datetime] = mapped_column(UTCDateTime)
    reverses_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("commissions.id", ondelete="RESTRICT"), index=True
    )
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reason_code: Mapped[str | None] = mapped_column(sa.String(32))
    note: Mapped[str | None] = mapped_column(sa.Text)
    # A ladder bonus's month, YYYY-MM in the program's time zone.
    period: Mapped[str | None] = mapped_column(sa.String(7))
    # How the amount was reached (rule, inputs, rate, result): the partner's "why this amount".
    explanation: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    conversion: Mapped[Conversion | None] = relationship(back_populates="commissions")
    partner: Mapped[Partner] = relationship()
    # The one payout this line is in, through payout_lines (keyed by the line: never two).
    payout_item: Mapped[PayoutItem | None] = relationship(  # noqa: F821 - models.payouts
        secondary="payout_lines",
        primaryjoin="Commission.id == foreign(PayoutLine.commission_id)",
        secondaryjoin="PayoutItem.id == foreign(PayoutLine.payout_item_id)",
        uselist=False,
        viewonly=True,
    )
    reverses: Mapped[Commission | None] = relationship(remote_side="Commission.id")


class ProductRate(db.Model):
    """A per-product override of the base rate (``product_id`` as the brand's API sends it)."""

    __tablename__ = "product_rates"
    __table_args__ = _rate_checks()

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[str] = mapped_column(sa.String(128), unique=True)
    label: Mapped[str | None] = mapped_column(sa.String(120))
    rate_type: Mapped[str] = mapped_column(sa.String(16), default=RateType.PERCENT)
    rate_percent_bp: Mapped[int] = mapped_column(default=0)
    rate_flat_minor: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class TierMetric(enum.StrEnum):
    REVENUE = "revenue"  # net sale amount (minor units), refunds taken off
    CONVERSIONS = "conversions"  # count, rejected and fully refunded ones left out


class TierPeriod(enum.StrEnum):
    PREVIOUS_MONTH = "previous_month"  # a calendar month in the program's time zone
    ROLLING_30 = "rolling_30"
    ROLLING_90 = "rolling_90"


class Tier(db.Model):
    """A named level: partners reaching ``threshold_value`` of ``threshold_metric`` earn its rate."""

    __tablename__ = "tiers"
    __table_args__ = (
        *_rate_checks(),
        sa.CheckConstraint("threshold_metric IN ('revenue', 'conversions')", name="metric_known"),
        sa.CheckConstraint("period IN ('previous_month', 'rolling_30', 'rolling_90')", name="period_known"),
        sa.CheckConstraint("threshold_value >= 0", name="threshold_positive"),
        sa.CheckConstraint("rank >= 1", name="rank_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(60), unique=True)
    # 1 is the lowest; a higher rank needs at least the threshold of every lower one.
    rank: Mapped[int] = mapped_column(unique=True)
    rate_type: Mapped[str] = mapped_column(sa.String(16), default=RateType.PERCENT)
    rate_percent_bp: Mapped[int] = mapped_column(default=0)
    rate_flat_minor: Mapped[int] = mapped_column(default=0)
    threshold_metric: Mapped[str] = mapped_column(sa.String(16), default=TierMetric.REVENUE)
    # Minor units for revenue, a count for conversions.
    threshold_value: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    period: Mapped[str] = mapped_column(sa.String(16), default=TierPeriod.PREVIOUS_MONTH)
    # Partners in this tier may ask for a custom campaign link.
    can_request_campaigns: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"<Tier {self.rank} {self.name}>"


class PartnerTier(db.Model):
    """A partner's current tier (no row: no tier, the base rate)."""

    __tablename__ = "partner_tiers"

    partner_id: Mapped[int] = mapped_column(
        sa.ForeignKey("partners.id", ondelete="CASCADE"), primary_key=True
    )
    tier_id: Mapped[int] = mapped_column(sa.ForeignKey("tiers.id", ondelete="CASCADE"), index=True)
    # When the partner got this tier; a downgrade counts from the start of the following month.
    since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    partner: Mapped[Partner] = relationship()
    tier: Mapped[Tier] = relationship()


class TierChangeReason(enum.StrEnum):
    THRESHOLD_REACHED = "threshold_reached"  # automatic upgrade
    BELOW_THRESHOLD = "below_threshold"  # automatic downgrade after a full period below
    MANUAL = "manual"  # an operator set it
    TIER_REMOVED = "tier_removed"  # the tier was deleted


class TierChange(db.Model):
    """The partner's tier timeline: one entry per change, with the reason and the figure."""

    __tablename__ = "tier_changes"
    __table_args__ = (
        sa.CheckConstraint(
            "reason IN ('threshold_reached', 'below_threshold', 'manual', 'tier_removed')",
            name="reason_known",
        ),
        sa.Index("ix_tier_changes_partner_created", "partner_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partners.id", ondelete="CASCADE"))
    from_tier_id: Mapped[int | None] = mapped_column(sa.ForeignKey("tiers.id", ondelete="SET NULL"))
    to_tier_id: Mapped[int | None] = mapped_column(sa.ForeignKey("tiers.id", ondelete="SET NULL"))
    # Names as they were, so the timeline still reads after a tier is renamed or deleted.
    from_name: Mapped[str | None] = mapped_column(sa.String(60))
    to_name: Mapped[str | None] = mapped_column(sa.String(60))
    upgrade: Mapped[bool]
    reason: Mapped[str] = mapped_column(sa.String(32))
    # The measured figure (minor units or count), its metric and window.
    metric: Mapped[str | None] = mapped_column(sa.String(16))
    metric_value: Mapped[int | None] = mapped_column(sa.BigInteger)
    window: Mapped[str | None] = mapped_column(sa.String(64))
    # The conversion that crossed the threshold (automatic upgrades).
    conversion_id: Mapped[int | None] = mapped_column(sa.ForeignKey("conversions.id", ondelete="SET NULL"))
    actor_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    note: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    partner: Mapped[Partner] = relationship()
    actor: Mapped[User | None] = relationship()


class CampaignReward(enum.StrEnum):
    RATE = "rate"  # replaces the rate (percent or flat)
    BONUS = "bonus"  # a fixed bonus per conversion on top of the rate


class CampaignAudience(enum.StrEnum):
    EVERYONE = "everyone"
    TIERS = "tiers"
    TAG = "tag"
    PARTNERS = "partners"  # named partners: a private campaign


campaign_tiers = sa.Table(
    "campaign_tiers",
    db.metadata,
    sa.Column("campaign_id", sa.ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("tier_id", sa.ForeignKey("tiers.id", ondelete="CASCADE"), primary_key=True, index=True),
)

campaign_partners = sa.Table(
    "campaign_partners",
    db.metadata,
    sa.Column("campaign_id", sa.ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("partner_id", sa.ForeignKey("partners.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Campaign(db.Model):
    """A time-boxed rule: a rate override or a fixed bonus, for some products and some partners.

    ``starts_at``/``ends_at`` are UTC instants (the console takes program-time-zone input);
    a conversion is in the campaign when ``starts_at <= occurred_at < ends_at``.
    """

    __tablename__ = "campaigns"
    __table_args__ = (
        *_rate_checks(),
        sa.CheckConstraint("reward IN ('rate', 'bonus')", name="reward_known"),
        sa.CheckConstraint("bonus_minor >= 0", name="bonus_positive"),
        sa.CheckConstraint("audience IN ('everyone', 'tiers', 'tag', 'partners')", name="audience_known"),
        sa.CheckConstraint("audience != 'tag' OR tag_id IS NOT NULL", name="tag_audience_has_tag"),
        sa.CheckConstraint("ends_at > starts_at", name="ends_after_start"),
        sa.Index("ix_campaigns_dates", "starts_at", "ends_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    description: Mapped[str | None] = mapped_column(sa.Text)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Empty: every product.
    product_ids: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    reward: Mapped[str] = mapped_column(sa.String(16), default=CampaignReward.RATE)
    rate_type: Mapped[str] = mapped_column(sa.String(16), default=RateType.PERCENT)
    rate_percent_bp: Mapped[int] = mapped_column(default=0)
    rate_flat_minor: Mapped[int] = mapped_column(default=0)
    bonus_minor: Mapped[int] = mapped_column(default=0)
    audience: Mapped[str] = mapped_column(sa.String(16), default=CampaignAudience.EVERYONE)
    tag_id: Mapped[int | None] = mapped_column(sa.ForeignKey("tags.id", ondelete="RESTRICT"))
    # Only conversions through the campaign's own links (links.campaign_id) earn it.
    links_only: Mapped[bool] = mapped_column(default=False)
    # The landing page of the campaign's links (None: the program's default).
    landing_url: Mapped[str | None] = mapped_column(sa.String(2000))
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    tiers: Mapped[list[Tier]] = relationship(secondary=campaign_tiers, order_by="Tier.rank")
    partners: Mapped[list[Partner]] = relationship(secondary=campaign_partners, order_by="Partner.id")
    tag: Mapped[Tag | None] = relationship()  # noqa: F821 - models.messaging
    created_by: Mapped[User | None] = relationship()

    @property
    def private(self) -> bool:
        return self.audience == CampaignAudience.PARTNERS

    @property
    def open_to_nobody(self) -> bool:
        """Its audience lost every member: all its tiers deleted (or no partner left named)."""
        if self.audience == CampaignAudience.TIERS:
            return not self.tiers
        return self.audience == CampaignAudience.PARTNERS and not self.partners

    def __repr__(self) -> str:
        return f"<Campaign {self.id} {self.name}>"


class LadderStep(db.Model):
    """A monthly volume bonus: reaching ``threshold_conversions`` in a month earns ``bonus_minor``.

    Only the highest step reached pays (steps are not added together).
    """

    __tablename__ = "ladder_steps"
    __table_args__ = (
        sa.CheckConstraint("threshold_conversions >= 1", name="threshold_positive"),
        sa.CheckConstraint("bonus_minor > 0", name="bonus_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    threshold_conversions: Mapped[int] = mapped_column(unique=True)
    bonus_minor: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PrivateDeal(db.Model):
    """A custom rate for one partner, optionally limited to products and to dates."""

    __tablename__ = "private_deals"
    __table_args__ = (
        *_rate_checks(),
        sa.CheckConstraint(
            "starts_at IS NULL OR ends_at IS NULL OR ends_at > starts_at", name="ends_after_start"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partners.id", ondelete="CASCADE"), index=True)
    rate_type: Mapped[str] = mapped_column(sa.String(16), default=RateType.PERCENT)
    rate_percent_bp: Mapped[int] = mapped_column(default=0)
    rate_flat_minor: Mapped[int] = mapped_column(default=0)
    # Empty: every product.
    product_ids: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    note: Mapped[str | None] = mapped_column(sa.Text)
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    partner: Mapped[Partner] = relationship()
    created_by: Mapped[User | None] = relationship()


class MonthClose(db.Model):
    """A closed month (YYYY-MM, program time zone): ladder bonuses written, tiers re-evaluated."""

    __tablename__ = "month_closes"

    month: Mapped[str] = mapped_column(sa.String(7), primary_key=True)
    closed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    bonus_lines: Mapped[int] = mapped_column(default=0)
    downgrades: Mapped[int] = mapped_column(default=0)


class RequestStatus(enum.StrEnum):
    REQUESTED = "requested"  # waiting for a manager
    COUNTERED = "countered"  # a manager offered another rate; waiting for the partner
    ACCEPTED = "accepted"  # the partner accepted the counter-offer
    DECLINED = "declined"  # by the manager (decline_reason) or the partner (a counter-offer)
    APPROVED = "approved"  # the campaign and its link exist
    WITHDRAWN = "withdrawn"  # the partner took it back


class CampaignRequest(db.Model):
    """A top partner's request for a custom campaign link, and its one inbox thread."""

    __tablename__ = "campaign_requests"
    __table_args__ = (
        *_rate_checks("desired"),
        *_rate_checks("counter", nullable=True),
        sa.CheckConstraint(
            "status IN ('requested', 'countered', 'accepted', 'declined', 'approved', 'withdrawn')",
            name="status_known",
        ),
        sa.CheckConstraint(
            "declined_by IS NULL OR declined_by IN ('partner', 'team')", name="declined_by_known"
        ),
        sa.CheckConstraint(
            "expected_monthly_conversions IS NULL OR expected_monthly_conversions >= 0",
            name="volume_positive",
        ),
        sa.CheckConstraint("status != 'countered' OR counter_type IS NOT NULL", name="counter_has_rate"),
        sa.Index("ix_campaign_requests_status_created", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partners.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    landing_url: Mapped[str] = mapped_column(sa.String(2000))
    desired_type: Mapped[str] = mapped_column(sa.String(16), default=RateType.PERCENT)
    desired_percent_bp: Mapped[int | None]
    desired_flat_minor: Mapped[int | None]
    expected_monthly_conversions: Mapped[int | None]
    note: Mapped[str | None] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(16), default=RequestStatus.REQUESTED)
    counter_type: Mapped[str | None] = mapped_column(sa.String(16))
    counter_percent_bp: Mapped[int | None]
    counter_flat_minor: Mapped[int | None]
    counter_note: Mapped[str | None] = mapped_column(sa.Text)
    decline_reason: Mapped[str | None] = mapped_column(sa.Text)
    declined_by: Mapped[str | None] = mapped_column(sa.String(16))
    thread_id: Mapped[int | None] = mapped_column(sa.ForeignKey("threads.id", ondelete="SET NULL"))
    campaign_id: Mapped[int | None] = mapped_column(sa.ForeignKey("campaigns.id", ondelete="SET NULL"))
    decided_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    partner: Mapped[Partner] = relationship()
    thread: Mapped[Thread | None] = relationship()  # noqa: F821 - models.messaging
    campaign: Mapped[Campaign | None] = relationship()
    decided_by: Mapped[User | None] = relationship()

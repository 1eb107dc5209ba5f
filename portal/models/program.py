"""The program's settings: one row that every rule reads."""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.models.types import UTCDateTime, utcnow


class PayoutSchedule(enum.StrEnum):
    WEEKLY = "weekly"
    BIWEEKLY = "biweekly"
    MONTHLY = "monthly"


class CommissionType(enum.StrEnum):
    PERCENT = "percent"
    FLAT = "flat"


class RecurringMode(enum.StrEnum):
    NONE = "none"  # only a customer's first conversion through the partner earns
    MONTHS = "months"  # renewals earn for recurring_months after the first conversion
    FOREVER = "forever"


class CouponAttribution(enum.StrEnum):
    """Who earns a sale that carries one partner's coupon code and another partner's older click."""

    COUPON = "coupon"  # the coupon on the sale wins (the default, as the anchor products do)
    FIRST_TOUCH = "first_touch"  # the click, the first touch, wins


class Program(db.Model):
    __tablename__ = "programs"
    __table_args__ = (
        sa.CheckConstraint("length(currency) = 3", name="currency_iso"),
        sa.CheckConstraint("cookie_window_days BETWEEN 1 AND 365", name="cookie_window_range"),
        sa.CheckConstraint("hold_period_days BETWEEN 0 AND 365", name="hold_period_range"),
        sa.CheckConstraint("minimum_payout_minor >= 0", name="minimum_payout_positive"),
        sa.CheckConstraint(
            "payout_schedule IN ('weekly', 'biweekly', 'monthly')", name="payout_schedule_known"
        ),
        sa.CheckConstraint(
            "(payout_schedule = 'monthly' AND payout_day BETWEEN 1 AND 28)"
            " OR (payout_schedule != 'monthly' AND payout_day BETWEEN 0 AND 6)",
            name="payout_day_range",
        ),
        sa.CheckConstraint("commission_type IN ('percent', 'flat')", name="commission_type_known"),
        sa.CheckConstraint("commission_percent_bp BETWEEN 0 AND 10000", name="commission_percent_range"),
        sa.CheckConstraint("commission_flat_minor >= 0", name="commission_flat_positive"),
        sa.CheckConstraint("recurring_mode IN ('none', 'months', 'forever')", name="recurring_mode_known"),
        sa.CheckConstraint(
            "recurring_mode != 'months' OR recurring_months BETWEEN 1 AND 120", name="recurring_months_range"
        ),
        sa.CheckConstraint("click_flood_per_minute >= 1", name="click_flood_positive"),
        sa.CheckConstraint("duplicate_window_minutes >= 1", name="duplicate_window_positive"),
        sa.CheckConstraint("max_sale_minor BETWEEN 1 AND 2000000000", name="max_sale_range"),
        sa.CheckConstraint(
            "coupon_attribution IN ('coupon', 'first_touch')", name="coupon_attribution_known"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    currency: Mapped[str] = mapped_column(sa.String(3), default="USD")
    timezone: Mapped[str] = mapped_column(sa.String(64), default="UTC")
    # The language of pages for visitors whose browser asks for none the portal speaks, and
    # of messages and e-mails to partners who never chose one (a SUPPORTED_LOCALES name).
    default_locale: Mapped[str] = mapped_column(sa.String(16), default="en", server_default="en")
    cookie_window_days: Mapped[int] = mapped_column(default=30)
    hold_period_days: Mapped[int] = mapped_column(default=30)
    allowed_domains: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    default_landing_url: Mapped[str] = mapped_column(sa.String(2000))
    minimum_payout_minor: Mapped[int] = mapped_column(default=5000)
    payout_schedule: Mapped[str] = mapped_column(sa.String(16), default=PayoutSchedule.MONTHLY)
    # Monthly: day of month 1-28. Weekly / bi-weekly: weekday, Monday = 0.
    payout_day: Mapped[int] = mapped_column(default=15)
    commission_type: Mapped[str] = mapped_column(sa.String(16), default=CommissionType.PERCENT)
    # Hundredths of a percent: 1000 = 10.00 %.
    commission_percent_bp: Mapped[int] = mapped_column(default=1000)
    commission_flat_minor: Mapped[int] = mapped_column(default=0)
    # Renewals: a later conversion of a customer the partner already brought.
    recurring_mode: Mapped[str] = mapped_column(sa.String(16), default=RecurringMode.FOREVER)
    recurring_months: Mapped[int | None]
    # Partners with this tag (or in a tier that allows it) may ask for custom campaign links.
    top_partner_tag: Mapped[str | None] = mapped_column(sa.String(40), default="top-partner")
    # Query parameter names appended to the landing page by the click redirect.
    ref_param: Mapped[str] = mapped_column(sa.String(32), default="ref")
    click_id_param: Mapped[str] = mapped_column(sa.String(32), default="click_id")
    # Fraud rules, each switchable.
    fraud_self_referral: Mapped[bool] = mapped_column(default=True)
    fraud_click_flood: Mapped[bool] = mapped_column(default=True)
    click_flood_per_minute: Mapped[int] = mapped_column(default=20)
    fraud_duplicate_order: Mapped[bool] = mapped_column(default=True)
    duplicate_window_minutes: Mapped[int] = mapped_column(default=10)
    # Partners may ask for their confirmed balance before the next payout date.
    allow_withdrawals: Mapped[bool] = mapped_column(default=False)
    # Managers and admins must set up two-factor sign-in before they reach the console.
    require_team_2fa: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    # The largest sale the API accepts, in minor units (default 1,000,000.00); a typo in a
    # merchant's integration must not become a commission of millions.
    max_sale_minor: Mapped[int] = mapped_column(default=100_000_000, server_default="100000000")
    # A sale with a coupon code and an older click of another partner: which of them earns.
    coupon_attribution: Mapped[str] = mapped_column(
        sa.String(16), default=CouponAttribution.COUPON, server_default="coupon"
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"<Program {self.id} {self.name}>"

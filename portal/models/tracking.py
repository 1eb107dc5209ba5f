"""The money path's first steps: links, clicks, signups (referrals), conversions, API keys."""

from __future__ import annotations

import enum
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models.accounts import CHANNELS, Partner, User
from portal.models.types import UTCDateTime, utcnow

# The longest coupon text the API keeps: a shop's own codes may be longer than partners' codes.
COUPON_TEXT_MAX = 128
_CHANNEL_CHECK = "channel IN (" + ", ".join(f"'{c}'" for c in CHANNELS) + ")"


class RejectionReason(enum.StrEnum):
    """The one fixed list of reasons, used for every rejected conversion and reversed commission."""

    REFUND = "refund"
    DUPLICATE = "duplicate"
    FRAUD_RISK = "fraud_risk"
    SELF_REFERRAL = "self_referral"
    TEST_ORDER = "test_order"
    OUT_OF_WINDOW = "out_of_window"
    OTHER = "other"


_REASON_CHECK = "IN (" + ", ".join(f"'{r.value}'" for r in RejectionReason) + ")"


class ConversionStatus(enum.StrEnum):
    PENDING = "pending"  # counted; its commission waits for the hold period
    REVIEW = "review"  # held for an operator (a fraud rule fired)
    REJECTED = "rejected"  # does not earn; rejection_reason says why (a full refund: "refund")
    HELD = "held"  # a sale in another currency waiting for its exchange rate (converted when it arrives)


class AttributionMethod(enum.StrEnum):
    CLICK = "click_id"
    COUPON = "coupon"
    REF = "ref"
    CUSTOMER = "customer"


_METHOD_CHECK = (
    "attribution_method IS NULL OR attribution_method IN ("
    + ", ".join(f"'{m.value}'" for m in AttributionMethod)
    + ")"
)


class Link(db.Model):
    __tablename__ = "links"
    __table_args__ = (sa.CheckConstraint(_CHANNEL_CHECK, name="channel_known"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partners.id", ondelete="CASCADE"), index=True)
    code: Mapped[str] = mapped_column(sa.String(64), unique=True)
    # None: the program's default landing page at the time of the click.
    destination_url: Mapped[str | None] = mapped_column(sa.String(2000))
    label: Mapped[str] = mapped_column(sa.String(120))
    channel: Mapped[str] = mapped_column(sa.String(16), default="other")
    campaign: Mapped[str | None] = mapped_column(sa.String(64))
    sub_id: Mapped[str | None] = mapped_column(sa.String(64))
    active: Mapped[bool] = mapped_column(default=True)
    custom_slug: Mapped[bool] = mapped_column(default=False)
    # A campaign's own link (rewards); the click redirect reads links through its cache.
    campaign_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("campaigns.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    partner: Mapped[Partner] = relationship()


class Click(db.Model):
    __tablename__ = "clicks"
    __table_args__ = (
        sa.Index("ix_clicks_partner_created", "partner_id", "created_at"),
        sa.Index("ix_clicks_creative_created", "creative_id", "created_at"),
    )

    # The click id travels to the brand's site and back in the API.
    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partners.id", ondelete="CASCADE"))
    link_id: Mapped[int | None] = mapped_column(sa.ForeignKey("links.id", ondelete="SET NULL"))
    code: Mapped[str] = mapped_column(sa.String(64))
    channel: Mapped[str] = mapped_column(sa.String(16))
    campaign: Mapped[str | None] = mapped_column(sa.String(64))
    sub_id: Mapped[str | None] = mapped_column(sa.String(64))
    # No foreign key: the id comes from the link's query string and a typo must not lose a batch of clicks.
    creative_id: Mapped[int | None]
    destination_url: Mapped[str] = mapped_column(sa.String(2000))
    ip_hash: Mapped[str] = mapped_column(sa.String(32))
    user_agent: Mapped[str | None] = mapped_column(sa.String(512))
    referrer: Mapped[str | None] = mapped_column(sa.String(1000))
    is_bot: Mapped[bool] = mapped_column(default=False)
    is_unique: Mapped[bool] = mapped_column(default=True)
    flagged: Mapped[str | None] = mapped_column(sa.String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    link: Mapped[Link | None] = relationship()


class Signup(db.Model):
    """A customer of the brand, and the partner (if any) who referred them."""

    __tablename__ = "signups"
    __table_args__ = (
        sa.CheckConstraint(_METHOD_CHECK, name="attribution_method_known"),
        # The partner's most recent signups (dashboard activity) without reading them all.
        sa.Index("ix_signups_partner_occurred", "partner_id", "occurred_at"),
        sa.Index("ix_signups_coupon_id", "coupon_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[str] = mapped_column(sa.String(128), unique=True)
    email: Mapped[str | None] = mapped_column(sa.String(254))
    partner_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("partners.id", ondelete="SET NULL"), index=True
    )
    click_id: Mapped[str | None] = mapped_column(sa.ForeignKey("clicks.id", ondelete="SET NULL"))
    # The coupon code as the shop sent it (capitals when it has a code's shape), kept even when
    # no partner owns it; ``coupon_id`` when it names one of the program's codes.
    coupon_code: Mapped[str | None] = mapped_column(sa.String(COUPON_TEXT_MAX))
    coupon_id: Mapped[int | None] = mapped_column(sa.ForeignKey("coupons.id", ondelete="SET NULL"))
    attribution_method: Mapped[str | None] = mapped_column(sa.String(16))
    attribution_note: Mapped[str | None] = mapped_column(sa.String(200))
    request_fingerprint: Mapped[str] = mapped_column(sa.String(64))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    partner: Mapped[Partner | None] = relationship()
    click: Mapped[Click | None] = relationship()


class Conversion(db.Model):
    __tablename__ = "conversions"
    __table_args__ = (
        sa.CheckConstraint("amount_minor >= 0", name="amount_not_negative"),
        sa.CheckConstraint(
            "refunded_minor >= 0 AND refunded_minor <= amount_minor", name="refund_within_amount"
        ),
        sa.CheckConstraint("length(currency) = 3", name="currency_iso"),
        sa.CheckConstraint("status IN ('pending', 'review', 'rejected', 'held')", name="status_known"),
        # A sale in another currency counts or waits for review only once converted.
        sa.CheckConstraint(
            "original_currency IS NULL OR fx_rate IS NOT NULL OR status IN ('held', 'rejected')",
            name="converted_or_held",
        ),
        sa.CheckConstraint(
            f"rejection_reason IS NULL OR rejection_reason {_REASON_CHECK}", name="reason_known"
        ),
        sa.CheckConstraint(
            "status != 'rejected' OR rejection_reason IS NOT NULL", name="rejected_has_reason"
        ),
        sa.CheckConstraint(_METHOD_CHECK, name="attribution_method_known"),
        sa.Index("ix_conversions_partner_occurred", "partner_id", "occurred_at"),
        sa.Index("ix_conversions_customer_occurred", "customer_id", "occurred_at"),
        # Declining a requested code deletes it (ON DELETE SET NULL looks here).
        sa.Index("ix_conversions_coupon_id", "coupon_id"),
        # The few sales waiting for an exchange rate (the jobs look every few minutes).
        sa.Index(
            "ix_conversions_waiting_for_rate",
            "id",
            postgresql_where=sa.text("original_currency IS NOT NULL AND fx_rate IS NULL"),
            sqlite_where=sa.text("original_currency IS NOT NULL AND fx_rate IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Unique per program: posting it again never creates a second conversion.
    transaction_id: Mapped[str] = mapped_column(sa.String(128), unique=True)
    amount_minor: Mapped[int]
    currency: Mapped[str] = mapped_column(sa.String(3))
    refunded_minor: Mapped[int] = mapped_column(default=0)
    # A sale in another currency than the program's: what the shop sent, in its currency
    # (refunds too); amount_minor / refunded_minor are in the program's currency at
    # ``fx_rate`` (the program's units for one unit of the sale's, decimal text) of
    # ``fx_rate_day`` from ``fx_source``. All None for a sale in the program's currency;
    # ``fx_rate`` None while the sale waits for a rate (amount_minor 0 until then).
    original_amount_minor: Mapped[int | None] = mapped_column(sa.BigInteger)
    original_currency: Mapped[str | None] = mapped_column(sa.String(3))
    original_refunded_minor: Mapped[int | None] = mapped_column(sa.BigInteger)
    fx_rate: Mapped[str | None] = mapped_column(sa.String(40))
    fx_rate_day: Mapped[date | None] = mapped_column(sa.Date)
    fx_source: Mapped[str | None] = mapped_column(sa.String(40))
    customer_id: Mapped[str | None] = mapped_column(sa.String(128))
    product_id: Mapped[str | None] = mapped_column(sa.String(128))
    partner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("partners.id", ondelete="SET NULL"))
    click_id: Mapped[str | None] = mapped_column(sa.ForeignKey("clicks.id", ondelete="SET NULL"))
    signup_id: Mapped[int | None] = mapped_column(sa.ForeignKey("signups.id", ondelete="SET NULL"))
    coupon_code: Mapped[str | None] = mapped_column(sa.String(COUPON_TEXT_MAX))  # as on Signup
    coupon_id: Mapped[int | None] = mapped_column(sa.ForeignKey("coupons.id", ondelete="SET NULL"))
    attribution_method: Mapped[str | None] = mapped_column(sa.String(16))
    attribution_note: Mapped[str | None] = mapped_column(sa.String(200))
    status: Mapped[str] = mapped_column(sa.String(16), default=ConversionStatus.PENDING, index=True)
    rejection_reason: Mapped[str | None] = mapped_column(sa.String(32))
    rejection_note: Mapped[str | None] = mapped_column(sa.Text)
    flagged_reason: Mapped[str | None] = mapped_column(sa.String(32))
    request_fingerprint: Mapped[str] = mapped_column(sa.String(64))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reviewed_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))

    partner: Mapped[Partner | None] = relationship()
    click: Mapped[Click | None] = relationship()
    signup: Mapped[Signup | None] = relationship()
    reviewed_by: Mapped[User | None] = relationship()
    commissions: Mapped[list[Commission]] = relationship(  # noqa: F821 - defined in rewards
        back_populates="conversion", order_by="Commission.id"
    )


class Refund(db.Model):
    """One refund of (part of) a sale, as the merchant reported it.

    ``refund_id`` is the merchant's own identifier: the same one again is a retry, answered
    from here, never a second refund. The refunds of a conversion add up to its
    ``refunded_minor`` (checked by ``check_ledger``)."""

    __tablename__ = "refunds"
    __table_args__ = (
        sa.UniqueConstraint("conversion_id", "refund_id", name="uq_refunds_conversion_refund_id"),
        sa.CheckConstraint("amount_minor > 0", name="amount_positive"),
        sa.CheckConstraint("length(currency) = 3", name="currency_iso"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conversion_id: Mapped[int] = mapped_column(
        sa.ForeignKey("conversions.id", ondelete="RESTRICT"), index=True
    )
    refund_id: Mapped[str | None] = mapped_column(sa.String(100))
    # In the sale's own currency (``original_currency`` for a foreign sale): 64-bit, as
    # ``Conversion.original_amount_minor`` (IDR 30,000,000.00 is 3,000,000,000 minor units).
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    note: Mapped[str | None] = mapped_column(sa.Text)
    # A digest of the request body, so a retry with a different body is told apart (409).
    request_fingerprint: Mapped[str] = mapped_column(sa.String(64))
    # The API's first answer to it, given again to a retry.
    response: Mapped[dict | None] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    conversion: Mapped[Conversion] = relationship()


class ApiKey(db.Model):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    # The first characters of the key, to recognise it in lists; the rest is only hashed.
    prefix: Mapped[str] = mapped_column(sa.String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(sa.String(64))
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    created_by: Mapped[User | None] = relationship()

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class LookupVersion(db.Model):
    """One row whose ``version`` goes up with every committed change to what the click
    redirect and the API keep cached in each process (links, partners' codes and status,
    the program, creatives, API keys). ``portal.lookups`` bumps it and watches it."""

    __tablename__ = "lookup_version"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(sa.BigInteger, default=0)

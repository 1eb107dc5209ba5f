"""Paying partners: payout batches and items, and where each partner wants the money.

Payout items are never deleted, and a paid or failed item never changes: database triggers
(migration 0011), listed in ``portal.models.rewards``'s docstring with the others.
"""

from __future__ import annotations

import enum
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models.accounts import Partner, User
from portal.models.types import UTCDateTime, utcnow


class BatchKind(enum.StrEnum):
    SCHEDULED = "scheduled"
    WITHDRAWAL = "withdrawal"


class BatchStatus(enum.StrEnum):
    REVIEW = "review"  # built; an operator checks it
    APPROVED = "approved"  # being paid
    CLOSED = "closed"  # every item paid or failed


class ItemStatus(enum.StrEnum):
    PENDING = "pending"  # in the batch, not paid yet
    HELD = "held"  # partner has no payout details: not paid, lines stay in the balance
    PAID = "paid"
    FAILED = "failed"  # payment bounced: lines back in the balance


class HoldReason(enum.StrEnum):
    """Why an item of a batch is held back instead of paid."""

    NO_DETAILS = "no_details"  # the partner has not said where to be paid
    SUSPENDED = "suspended"  # the partner is suspended; released on reinstatement
    DETAILS_CHANGED = "details_changed"  # payout details changed shortly before the batch: review


class PayoutMethod(enum.StrEnum):
    PAYPAL = "paypal"
    BANK = "bank"
    OTHER = "other"


class PayoutBatch(db.Model):
    __tablename__ = "payout_batches"
    __table_args__ = (
        sa.CheckConstraint("kind IN ('scheduled', 'withdrawal')", name="kind_known"),
        sa.CheckConstraint("status IN ('review', 'approved', 'closed')", name="status_known"),
        sa.CheckConstraint("length(currency) = 3", name="currency_iso"),
        # One scheduled batch per payout date: a second settlement run finds the first.
        sa.Index(
            "uq_payout_batches_scheduled_period",
            "period_end",
            unique=True,
            sqlite_where=sa.text("kind = 'scheduled'"),
            postgresql_where=sa.text("kind = 'scheduled'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16), default=BatchKind.SCHEDULED)
    status: Mapped[str] = mapped_column(sa.String(16), default=BatchStatus.REVIEW)
    currency: Mapped[str] = mapped_column(sa.String(3))
    period_start: Mapped[date | None] = mapped_column(sa.Date)
    period_end: Mapped[date] = mapped_column(sa.Date)
    # Lines confirmed before this instant belong to the batch.
    cutoff_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    approved_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    items: Mapped[list[PayoutItem]] = relationship(back_populates="batch", order_by="PayoutItem.id")
    approved_by: Mapped[User | None] = relationship(foreign_keys=[approved_by_id])
    created_by: Mapped[User | None] = relationship(foreign_keys=[created_by_id])


class PayoutItem(db.Model):
    __tablename__ = "payout_items"
    __table_args__ = (
        sa.UniqueConstraint("batch_id", "partner_id"),
        sa.CheckConstraint("status IN ('pending', 'held', 'paid', 'failed')", name="status_known"),
        sa.CheckConstraint("amount_minor > 0", name="amount_positive"),
        sa.CheckConstraint("length(currency) = 3", name="currency_iso"),
        sa.CheckConstraint(
            "status != 'paid' OR (reference IS NOT NULL AND paid_on IS NOT NULL)", name="paid_has_reference"
        ),
        sa.CheckConstraint("status != 'failed' OR failure_reason IS NOT NULL", name="failed_has_reason"),
        sa.CheckConstraint(
            "hold_reason IS NULL OR hold_reason IN ('no_details', 'suspended', 'details_changed')",
            name="hold_reason_known",
        ),
        sa.CheckConstraint("(status = 'held') = (hold_reason IS NOT NULL)", name="held_has_reason"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(sa.ForeignKey("payout_batches.id", ondelete="RESTRICT"), index=True)
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partners.id", ondelete="RESTRICT"), index=True)
    amount_minor: Mapped[int]
    currency: Mapped[str] = mapped_column(sa.String(3))
    status: Mapped[str] = mapped_column(sa.String(16), default=ItemStatus.PENDING)
    # The payout details as they were when the batch was built (what the export pays to).
    method: Mapped[str | None] = mapped_column(sa.String(16))
    destination: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    reference: Mapped[str | None] = mapped_column(sa.String(128))
    paid_on: Mapped[date | None] = mapped_column(sa.Date)
    failure_reason: Mapped[str | None] = mapped_column(sa.Text)
    hold_reason: Mapped[str | None] = mapped_column(sa.String(32))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    batch: Mapped[PayoutBatch] = relationship(back_populates="items")
    partner: Mapped[Partner] = relationship()


class PayoutLine(db.Model):
    """A commission line in a payout item. Keyed by the line, so the database itself keeps
    every line in at most one payout; a failed payment deletes its rows (the lines go back
    to the balance). Narrow on purpose: a batch writes one row per line, 1M in one statement.

    No foreign keys, deliberately: PostgreSQL checks them with a trigger call and a row lock
    per inserted row, which made building a 1M-line batch several times slower. The rows are
    written only by settlement, in the same statement that selects the existing lines and
    items, and neither commissions nor payout items are ever deleted.
    """

    __tablename__ = "payout_lines"

    commission_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    # Not indexed (migration 0021): a batch writes one row per line, and a second index over
    # them cost a third of a 10M-line batch. An item's lines are found from its partner's lines
    # (``payouts._lines_of_item``), which are indexed by partner.
    payout_item_id: Mapped[int]


class PartnerBalance(db.Model):
    """A partner's running totals per currency, kept by database triggers (migration 0021), so
    their confirmed balance is one row whatever their history:

    - ``confirmed_minor``: the sum of the partner's confirmed commission lines;
    - ``settled_minor``: the sum of their payout items waiting to be paid or paid (each equals
      its lines; a held or failed item has none).

    The confirmed (unpaid) balance is ``confirmed_minor - settled_minor``. Only the triggers
    write it, on every insert, update and delete of a line or an item; ``check_ledger``
    recounts both from the rows (``running_balance``).
    """

    __tablename__ = "partner_balances"
    __table_args__ = (sa.CheckConstraint("length(currency) = 3", name="currency_iso"),)

    partner_id: Mapped[int] = mapped_column(
        sa.ForeignKey("partners.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    currency: Mapped[str] = mapped_column(sa.String(3), primary_key=True)
    confirmed_minor: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    settled_minor: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")


class PayoutAccount(db.Model):
    """Where a partner wants to be paid. One per partner; changes are audited."""

    __tablename__ = "payout_accounts"
    __table_args__ = (sa.CheckConstraint("method IN ('paypal', 'bank', 'other')", name="method_known"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partners.id", ondelete="CASCADE"), unique=True)
    method: Mapped[str] = mapped_column(sa.String(16))
    paypal_email: Mapped[str | None] = mapped_column(sa.String(254))
    account_holder: Mapped[str | None] = mapped_column(sa.String(120))
    iban: Mapped[str | None] = mapped_column(sa.String(34))
    bic: Mapped[str | None] = mapped_column(sa.String(11))
    bank_name: Mapped[str | None] = mapped_column(sa.String(120))
    other_instructions: Mapped[str | None] = mapped_column(sa.Text)
    tax_id: Mapped[str | None] = mapped_column(sa.String(64))
    tax_country: Mapped[str | None] = mapped_column(sa.String(2))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    partner: Mapped[Partner] = relationship()

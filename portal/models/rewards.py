"""Commission lines: an append-only ledger per conversion."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models.accounts import Partner
from portal.models.tracking import _REASON_CHECK, Conversion
from portal.models.types import UTCDateTime, utcnow


class CommissionKind(enum.StrEnum):
    BASE = "base"
    REVERSAL = "reversal"  # taken back before the line was paid out
    CLAWBACK = "clawback"  # taken back after it was in a payout; the next batch nets it off


CORRECTION_KINDS = frozenset({CommissionKind.REVERSAL, CommissionKind.CLAWBACK})


class CommissionStatus(enum.StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"


class Commission(db.Model):
    """One line of a partner's earnings. Never edited once confirmed: corrections are new lines."""

    __tablename__ = "commissions"
    __table_args__ = (
        sa.CheckConstraint("kind IN ('base', 'reversal', 'clawback')", name="kind_known"),
        sa.CheckConstraint("status IN ('pending', 'confirmed')", name="status_known"),
        sa.CheckConstraint("length(currency) = 3", name="currency_iso"),
        sa.CheckConstraint(f"reason_code IS NULL OR reason_code {_REASON_CHECK}", name="reason_known"),
        sa.CheckConstraint(
            "kind = 'base' OR (reason_code IS NOT NULL AND amount_minor <= 0)", name="correction_rules"
        ),
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
    conversion_id: Mapped[int] = mapped_column(
        sa.ForeignKey("conversions.id", ondelete="RESTRICT"), index=True
    )
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partners.id", ondelete="RESTRICT"))
    kind: Mapped[str] = mapped_column(sa.String(16))
    amount_minor: Mapped[int]
    currency: Mapped[str] = mapped_column(sa.String(3))
    status: Mapped[str] = mapped_column(sa.String(16), default=CommissionStatus.PENDING)
    confirm_after: Mapped[datetime] = mapped_column(UTCDateTime)
    reverses_id: Mapped[int | None] = mapped_column(sa.ForeignKey("commissions.id", ondelete="RESTRICT"))
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reason_code: Mapped[str | None] = mapped_column(sa.String(32))
    note: Mapped[str | None] = mapped_column(sa.Text)
    # How the amount was reached (rule, inputs, rate, result): the partner's "why this amount".
    explanation: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    conversion: Mapped[Conversion] = relationship(back_populates="commissions")
    partner: Mapped[Partner] = relationship()
    # The one payout this line is in, through payout_lines (keyed by the line: never two).
    payout_item: Mapped[PayoutItem | None] = relationship(  # noqa: F821 - models.payouts
        secondary="payout_lines",
        primaryjoin="Commission.id == foreign(PayoutLine.commission_id)",
        secondaryjoin="PayoutItem.id == foreign(PayoutLine.payout_item_id)",
        uselist=False,
        viewonly=True,
    )

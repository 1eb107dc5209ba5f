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
        sa.Index("ix_commissions_partner_status", "partner_id", "status"),
        # A partner's lines not in a payout yet (their balance) without reading the paid ones.
        sa.Index("ix_commissions_partner_unpaid", "partner_id", "payout_item_id"),
        sa.Index("ix_commissions_settle", "status", "payout_item_id", "confirm_after"),
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
    # The one payout this line is in (a single column: a line can never be in two).
    payout_item_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("payout_items.id", ondelete="SET NULL"), index=True
    )
    reason_code: Mapped[str | None] = mapped_column(sa.String(32))
    note: Mapped[str | None] = mapped_column(sa.Text)
    # How the amount was reached (rule, inputs, rate, result): the partner's "why this amount".
    explanation: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    conversion: Mapped[Conversion] = relationship(back_populates="commissions")
    partner: Mapped[Partner] = relationship()
    payout_item: Mapped[PayoutItem | None] = relationship()  # noqa: F821 - models.payouts

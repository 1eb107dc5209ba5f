"""Coupon codes: a partner's own code, typed by shoppers at checkout, that attributes the sale."""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models.accounts import Partner, User
from portal.models.types import UTCDateTime, utcnow

CODE_MIN, CODE_MAX = 3, 40


class CouponStatus(enum.StrEnum):
    REQUESTED = "requested"  # a partner asked for it; a manager approves or declines
    ACTIVE = "active"  # attributes sales and signups to its partner
    DISABLED = "disabled"  # kept (past sales still name it) but attributes nothing


class Coupon(db.Model):
    """One code, unique in the program whatever its case: stored in capitals (``code``
    is checked by the database to be upper-case, 3-40 characters)."""

    __tablename__ = "coupons"
    __table_args__ = (
        sa.CheckConstraint("status IN ('requested', 'active', 'disabled')", name="status_known"),
        sa.CheckConstraint(f"length(code) BETWEEN {CODE_MIN} AND {CODE_MAX}", name="code_length"),
        sa.CheckConstraint("code = upper(code)", name="code_upper"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partners.id", ondelete="CASCADE"), index=True)
    code: Mapped[str] = mapped_column(sa.String(CODE_MAX), unique=True)
    status: Mapped[str] = mapped_column(sa.String(16), default=CouponStatus.ACTIVE)
    # What the partner said when asking for it (where they will use it).
    note: Mapped[str | None] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))

    partner: Mapped[Partner] = relationship()
    created_by: Mapped[User | None] = relationship(foreign_keys=[created_by_id])
    decided_by: Mapped[User | None] = relationship(foreign_keys=[decided_by_id])

    def __repr__(self) -> str:
        return f"<Coupon {self.id} {self.code} {self.status}>"

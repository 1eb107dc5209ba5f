"""Users, their roles, and the partner profile that hangs off a partner user."""

from __future__ import annotations

import enum
import secrets
from datetime import datetime

import sqlalchemy as sa
from flask_login import UserMixin
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from portal.extensions import db
from portal.models.types import UTCDateTime, utcnow


class Role(enum.StrEnum):
    PARTNER = "partner"
    MANAGER = "manager"
    ADMIN = "admin"


OPERATOR_ROLES = frozenset({Role.MANAGER, Role.ADMIN})


class PartnerStatus(enum.StrEnum):
    APPLIED = "applied"
    APPROVED = "approved"
    REJECTED = "rejected"
    SUSPENDED = "suspended"


CHANNELS = ("seo", "social", "ads", "email", "video", "other")


def _new_session_token() -> str:
    return secrets.token_urlsafe(24)


class User(UserMixin, db.Model):
    __tablename__ = "users"
    __table_args__ = (
        sa.CheckConstraint("role IN ('partner', 'manager', 'admin')", name="role_known"),
        sa.CheckConstraint("email = lower(email)", name="email_lowercase"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254), unique=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    role: Mapped[str] = mapped_column(sa.String(16), default=Role.PARTNER)
    active: Mapped[bool] = mapped_column(default=True)
    # Part of the login cookie: rotating it signs the user out everywhere.
    session_token: Mapped[str] = mapped_column(sa.String(64), unique=True, default=_new_session_token)
    timezone: Mapped[str | None] = mapped_column(sa.String(64))
    locale: Mapped[str | None] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Keyed hash of the address of the last sign-in: the self-referral rule compares clicks to it.
    last_login_ip_hash: Mapped[str | None] = mapped_column(sa.String(32))
    # Two-factor sign-in (TOTP). A secret without ``totp_enabled_at`` is an enrolment not yet
    # confirmed; ``last_totp_step`` is the newest 30-second step used, so no code is used twice.
    totp_secret: Mapped[str | None] = mapped_column(sa.String(64))
    totp_enabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_totp_step: Mapped[int | None] = mapped_column(sa.BigInteger)

    partner: Mapped[Partner | None] = relationship(
        back_populates="user", uselist=False, foreign_keys="Partner.user_id"
    )

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)
        self.rotate_session_token()

    def rotate_session_token(self) -> None:
        """Every session and remember-me cookie made with the old token stops working."""
        self.session_token = _new_session_token()

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    # Flask-Login
    def get_id(self) -> str:
        return self.session_token

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def two_factor_enabled(self) -> bool:
        return self.totp_enabled_at is not None

    @property
    def is_operator(self) -> bool:
        return self.role in OPERATOR_ROLES

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    def __repr__(self) -> str:
        return f"<User {self.id} {self.email} {self.role}>"


class RecoveryCode(db.Model):
    """A one-time code that stands in for the second factor; only its hash is kept."""

    __tablename__ = "recovery_codes"
    __table_args__ = (sa.UniqueConstraint("user_id", "code_hash", name="uq_recovery_codes_user_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Partner(db.Model):
    __tablename__ = "partners"
    __table_args__ = (
        sa.CheckConstraint("status IN ('applied', 'approved', 'rejected', 'suspended')", name="status_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    ref_code: Mapped[str] = mapped_column(sa.String(32), unique=True)
    status: Mapped[str] = mapped_column(sa.String(16), default=PartnerStatus.APPLIED, index=True)
    website: Mapped[str | None] = mapped_column(sa.String(500))
    social_profiles: Mapped[str | None] = mapped_column(sa.Text)
    channels: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    promotion_description: Mapped[str] = mapped_column(sa.Text)
    country: Mapped[str] = mapped_column(sa.String(2))
    status_reason: Mapped[str | None] = mapped_column(sa.Text)
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status_changed_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    # The partner's own manager: sees their messages first.
    manager_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"), index=True)
    # The onboarding checklist: the first time the partner copied their link, copied or
    # downloaded a creative, and opened the program terms (each set once, never cleared).
    link_copied_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    creative_grabbed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    terms_read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(back_populates="partner", foreign_keys=[user_id])
    status_changed_by: Mapped[User | None] = relationship(foreign_keys=[status_changed_by_id])
    manager: Mapped[User | None] = relationship(foreign_keys=[manager_id])
    tags: Mapped[list[Tag]] = relationship(  # noqa: F821 - defined in messaging
        secondary="partner_tags", order_by="Tag.name", lazy="selectin"
    )

    @property
    def attributes(self) -> bool:
        """Whether this partner's links may earn (only approved partners' do)."""
        return self.status == PartnerStatus.APPROVED

    @property
    def can_use_portal(self) -> bool:
        return self.status in (PartnerStatus.APPROVED, PartnerStatus.SUSPENDED)

    def __repr__(self) -> str:
        return f"<Partner {self.id} {self.ref_code} {self.status}>"

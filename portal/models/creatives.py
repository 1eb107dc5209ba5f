"""The creative library: banners, copy, landing pages, e-mail templates and video links, with versions."""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, foreign, mapped_column, relationship

from portal.extensions import db
from portal.models.accounts import User
from portal.models.types import UTCDateTime, utcnow


class CreativeKind(enum.StrEnum):
    BANNER = "banner"
    TEXT = "text"
    LANDING = "landing"
    EMAIL = "email"
    VIDEO = "video"


class CreativeStatus(enum.StrEnum):
    DRAFT = "draft"  # operators only
    PUBLISHED = "published"  # in every partner's library
    ARCHIVED = "archived"  # withdrawn: gone from the library, banner images stop serving


def _known(column: str, values) -> str:
    return f"{column} IN (" + ", ".join(f"'{v.value}'" for v in values) + ")"


class Creative(db.Model):
    """What partners see in the library. The content lives in versions; the newest is current."""

    __tablename__ = "creatives"
    __table_args__ = (
        sa.CheckConstraint(_known("kind", CreativeKind), name="kind_known"),
        sa.CheckConstraint(_known("status", CreativeStatus), name="status_known"),
        sa.CheckConstraint("current_version >= 1", name="version_positive"),
        sa.Index("ix_creatives_status_kind", "status", "kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    name: Mapped[str] = mapped_column(sa.String(120))
    description: Mapped[str | None] = mapped_column(sa.Text)
    channels: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    campaign: Mapped[str | None] = mapped_column(sa.String(64))
    # ISO 639-1, e.g. "en".
    language: Mapped[str] = mapped_column(sa.String(8), default="en")
    status: Mapped[str] = mapped_column(sa.String(16), default=CreativeStatus.DRAFT)
    current_version: Mapped[int] = mapped_column(default=1)
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    created_by: Mapped[User | None] = relationship()
    versions: Mapped[list[CreativeVersion]] = relationship(
        back_populates="creative", order_by="CreativeVersion.number.desc()", cascade="all, delete-orphan"
    )
    current: Mapped[CreativeVersion] = relationship(
        primaryjoin=lambda: sa.and_(
            foreign(CreativeVersion.creative_id) == Creative.id,
            CreativeVersion.number == Creative.current_version,
        ),
        viewonly=True,
        uselist=False,
        lazy="joined",
    )

    def __repr__(self) -> str:
        return f"<Creative {self.id} {self.kind} {self.status}>"


class CreativeVersion(db.Model):
    """One version of a creative's content. Never changed after it is written: edits add a version."""

    __tablename__ = "creative_versions"
    __table_args__ = (
        sa.UniqueConstraint("creative_id", "number", name="uq_creative_versions_number"),
        sa.CheckConstraint("number >= 1", name="number_positive"),
        sa.CheckConstraint(
            "(file_key IS NULL AND file_size IS NULL AND file_type IS NULL)"
            " OR (file_key IS NOT NULL AND file_size IS NOT NULL AND file_type IS NOT NULL)",
            name="file_complete",
        ),
        sa.CheckConstraint("file_size IS NULL OR file_size > 0", name="file_size_positive"),
        sa.CheckConstraint("width IS NULL OR (width > 0 AND height > 0)", name="dimensions_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    creative_id: Mapped[int] = mapped_column(sa.ForeignKey("creatives.id", ondelete="CASCADE"), index=True)
    number: Mapped[int]
    # The stored image (banner; landing-page screenshot): key in the store, sniffed type, size, pixels.
    # A version that only changes text shares its predecessor's object.
    file_key: Mapped[str | None] = mapped_column(sa.String(300))
    file_type: Mapped[str | None] = mapped_column(sa.String(32))
    file_size: Mapped[int | None]
    file_name: Mapped[str | None] = mapped_column(sa.String(255))
    file_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    width: Mapped[int | None]
    height: Mapped[int | None]
    # Text copy and e-mail templates; "{link}" marks where the partner's link goes.
    headline: Mapped[str | None] = mapped_column(sa.String(200))
    subject: Mapped[str | None] = mapped_column(sa.String(200))
    body: Mapped[str | None] = mapped_column(sa.Text)
    call_to_action: Mapped[str | None] = mapped_column(sa.String(200))
    # Landing page (on an allowed domain) or video address.
    url: Mapped[str | None] = mapped_column(sa.String(2000))
    note: Mapped[str | None] = mapped_column(sa.String(200))
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    creative: Mapped[Creative] = relationship(back_populates="versions")
    created_by: Mapped[User | None] = relationship()

"""Talking to partners: tags, inbox threads, announcements, automatic messages, e-mail delivery."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models.accounts import Partner, User
from portal.models.types import UTCDateTime, utcnow


class Sender(enum.StrEnum):
    PARTNER = "partner"  # the partner wrote it
    TEAM = "team"  # an operator wrote it
    SYSTEM = "system"  # an automatic message


class AutomaticKind(enum.StrEnum):
    """The automatic messages, each an editable template that can be switched off."""

    WELCOME = "welcome"
    FIRST_CONVERSION = "first_conversion"
    WAKE_UP = "wake_up"
    TIER_UPGRADE = "tier_upgrade"
    PAYOUT_SENT = "payout_sent"
    NEW_CREATIVES = "new_creatives"
    CAMPAIGN_STARTING = "campaign_starting"
    CONVERSION_REJECTED = "conversion_rejected"
    PAYOUT_FAILED = "payout_failed"


# What a partner can switch e-mail off for: personal messages, announcements, each automatic kind.
EMAIL_KINDS = ("message", "announcement", *(k.value for k in AutomaticKind))

partner_tags = sa.Table(
    "partner_tags",
    db.metadata,
    sa.Column("partner_id", sa.ForeignKey("partners.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("tag_id", sa.ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Tag(db.Model):
    __tablename__ = "tags"
    __table_args__ = (sa.CheckConstraint("name = lower(name)", name="name_lowercase"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(40), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"<Tag {self.name}>"


class Thread(db.Model):
    """A conversation between one partner and the program team."""

    __tablename__ = "threads"
    __table_args__ = (sa.Index("ix_threads_partner_last", "partner_id", "last_message_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partners.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(sa.String(200))
    # Set when an automatic message opened the thread.
    automatic_kind: Mapped[str | None] = mapped_column(sa.String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_message_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    partner: Mapped[Partner] = relationship()
    messages: Mapped[list[Message]] = relationship(
        back_populates="thread", order_by="Message.id", cascade="all, delete-orphan"
    )


class Message(db.Model):
    __tablename__ = "messages"
    __table_args__ = (
        sa.CheckConstraint("sender IN ('partner', 'team', 'system')", name="sender_known"),
        sa.Index("ix_messages_thread_created", "thread_id", "created_at"),
        sa.Index("ix_messages_unread", "sender", "read_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    thread_id: Mapped[int] = mapped_column(sa.ForeignKey("threads.id", ondelete="CASCADE"))
    sender: Mapped[str] = mapped_column(sa.String(16))
    author_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    # Markdown source; rendered and sanitised when shown.
    body: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When the other side (the partner, or any operator) first read it.
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    thread: Mapped[Thread] = relationship(back_populates="messages")
    author: Mapped[User | None] = relationship()


class Announcement(db.Model):
    __tablename__ = "announcements"
    __table_args__ = (sa.Index("ix_announcements_due", "published_at", "publish_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(200))
    body: Mapped[str] = mapped_column(sa.Text)
    # Who gets it: "all" approved partners, "tags", "partners" (named), or a kind another
    # module registers (tiers); checked by the service, so new kinds need no migration.
    audience_kind: Mapped[str] = mapped_column(sa.String(32))
    audience_keys: Mapped[list[Any]] = mapped_column(sa.JSON, default=list)
    pinned: Mapped[bool] = mapped_column(default=False)
    # A scheduled announcement goes out at publish_at; published_at is when it did.
    publish_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    created_by: Mapped[User | None] = relationship()

    @property
    def state(self) -> str:
        if self.published_at is not None:
            return "published"
        return "scheduled" if self.publish_at is not None else "draft"


class AnnouncementRecipient(db.Model):
    """The audience, fixed when the announcement goes out; read_at counts its readers."""

    __tablename__ = "announcement_recipients"

    announcement_id: Mapped[int] = mapped_column(
        sa.ForeignKey("announcements.id", ondelete="CASCADE"), primary_key=True
    )
    partner_id: Mapped[int] = mapped_column(
        sa.ForeignKey("partners.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    announcement: Mapped[Announcement] = relationship()


class MessageTemplate(db.Model):
    """An automatic message's editable wording and its on/off switch."""

    __tablename__ = "message_templates"
    __table_args__ = (
        sa.CheckConstraint("quiet_days IS NULL OR quiet_days >= 1", name="quiet_days_positive"),
    )

    kind: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    enabled: Mapped[bool] = mapped_column(default=True)
    subject: Mapped[str] = mapped_column(sa.String(200))
    body: Mapped[str] = mapped_column(sa.Text)
    # The wake-up's "no click for N days".
    quiet_days: Mapped[int | None]
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))


class AutomaticMessageLog(db.Model):
    """One row per automatic message sent: the unique key is what makes each fire once."""

    __tablename__ = "automatic_message_log"
    __table_args__ = (
        sa.UniqueConstraint("kind", "partner_id", "dedupe_key", name="uq_automatic_message_once"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partners.id", ondelete="CASCADE"), index=True)
    dedupe_key: Mapped[str] = mapped_column(sa.String(200))
    message_id: Mapped[int | None] = mapped_column(sa.ForeignKey("messages.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EmailPreference(db.Model):
    """A partner's e-mail switch for one kind; no row means e-mail is on."""

    __tablename__ = "email_preferences"

    partner_id: Mapped[int] = mapped_column(
        sa.ForeignKey("partners.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    enabled: Mapped[bool] = mapped_column(default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class OutboundEmail(db.Model):
    """An e-mail written in the same transaction as its message, sent after the commit."""

    __tablename__ = "email_outbox"
    __table_args__ = (sa.Index("ix_email_outbox_unsent", "sent_at", "attempts"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("partners.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(sa.String(32))
    to_address: Mapped[str] = mapped_column(sa.String(254))
    subject: Mapped[str] = mapped_column(sa.String(300))
    text: Mapped[str] = mapped_column(sa.Text)
    html: Mapped[str | None] = mapped_column(sa.Text)
    unsubscribe_url: Mapped[str] = mapped_column(sa.String(2000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A sender claims a row before sending so two senders never send it twice at once.
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    # After a failed attempt: not before this (back-off by time; see services.delivery).
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

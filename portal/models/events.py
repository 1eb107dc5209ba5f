"""The outbox of domain events and what reads it: consumer positions, webhook endpoints and deliveries.

An event row is written in the transaction that made the change, so it exists if and only
if the change committed. Consumers (automatic messages, live updates, webhooks) read it
after the commit, each at its own position; ``portal.services.outbox`` runs them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models.types import UTCDateTime, utcnow

# 64-bit ids on PostgreSQL (one event per sale, per commission line, …); SQLite's INTEGER is 64-bit already.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class OutboxEvent(db.Model):
    """One thing that happened (``conversion.created``, ``payout.paid``, …) and its JSON data."""

    __tablename__ = "outbox_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    type: Mapped[str] = mapped_column(sa.String(64))
    # Whose it is (webhook deliveries keep each partner's events in order); None for program-wide ones.
    partner_id: Mapped[int | None] = mapped_column(index=True)
    data: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    # Set for an event that must happen once ever (``campaign.started:<id>``).
    key: Mapped[str | None] = mapped_column(sa.String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OutboxConsumer(db.Model):
    """A consumer's position (every event at or below it is handled) and its lease.

    One dispatcher at a time holds a consumer's lease (an UPDATE … WHERE the lease is free
    or expired: the same on SQLite and PostgreSQL); receipts above the position make a
    second handling of an event impossible even if a lease ran out mid-batch.
    """

    __tablename__ = "outbox_consumers"

    name: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    position: Mapped[int] = mapped_column(BigId, default=0)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OutboxReceipt(db.Model):
    """Consumer ``consumer`` has handled event ``event_id`` (written with the handling's effects)."""

    __tablename__ = "outbox_receipts"

    consumer: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    event_id: Mapped[int] = mapped_column(BigId, primary_key=True)


class WebhookEndpoint(db.Model):
    """A URL of the brand's that receives signed events (Standard Webhooks)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(sa.String(2000))
    description: Mapped[str | None] = mapped_column(sa.String(200))
    # The event types it wants; an empty list means every type.
    event_types: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    enabled: Mapped[bool] = mapped_column(default=True)
    # "whsec_" + base64 of the key; shown to the operator once, when made or rotated.
    secret: Mapped[str] = mapped_column(sa.String(100))
    # Since when every attempt has failed (None: the last one worked); three days of it disables.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_reason: Mapped[str | None] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))

    deliveries: Mapped[list[WebhookDelivery]] = relationship(
        back_populates="endpoint", cascade="all, delete-orphan", passive_deletes=True
    )

    def wants(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


class DeliveryStatus:
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # given up (three days of failures, or the endpoint was disabled)


class WebhookDelivery(db.Model):
    """One event for one endpoint: the exact body sent, its state and its attempts."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.UniqueConstraint("endpoint_id", "event_id", name="uq_webhook_delivery_once"),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status_known"),
        sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        sa.Index("ix_webhook_deliveries_order", "endpoint_id", "partner_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    # None for a test event sent from the console.
    event_id: Mapped[int | None] = mapped_column(BigId)
    # The webhook-id header: the same for every attempt, so a receiver can drop a repeat.
    message_id: Mapped[str] = mapped_column(sa.String(64))
    event_type: Mapped[str] = mapped_column(sa.String(64))
    partner_id: Mapped[int | None]
    body: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A sender holds a delivery until then (two dispatchers never send it at once).
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    endpoint: Mapped[WebhookEndpoint] = relationship(back_populates="deliveries")
    attempt_log: Mapped[list[WebhookAttempt]] = relationship(
        order_by="WebhookAttempt.id", cascade="all, delete-orphan", passive_deletes=True
    )


class WebhookAttempt(db.Model):
    """One HTTP attempt of a delivery: the log the console shows."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int]
    status_code: Mapped[int | None]
    duration_ms: Mapped[int]
    error: Mapped[str | None] = mapped_column(sa.String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

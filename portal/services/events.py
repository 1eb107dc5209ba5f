"""Domain events: what money and partner services write instead of calling messaging.

``record(type, data, partner_id=...)`` adds one row to the outbox, in the caller's
transaction; it exists if and only if the change commits. The sale's own events
(``conversion.*`` on insert, ``commission.created`` / ``commission.reversed``) are
written by database triggers on ``conversions`` and ``commissions`` (migration
0017_outbox), so the conversion API's statement budget holds; the service only marks
the session (``written()``) so the dispatcher runs after the commit.

This module imports nothing but the database: any service may use it.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from portal.extensions import db
from portal.models import OutboxEvent
from portal.models.types import utcnow

# Set in a session that wrote events; the dispatcher looks after its commit.
WRITTEN_KEY = "portal_outbox_written"

# Every event type, what it means, and an example of its data (README, OpenAPI, console).
TYPES: dict[str, tuple[str, dict[str, Any]]] = {
    "partner.applied": (
        "Someone applied to join the program.",
        {"partner_id": 42, "ref_code": "pat", "name": "Pat Partner", "channels": ["seo"]},
    ),
    "partner.approved": ("An operator approved a partner.", {"partner_id": 42, "ref_code": "pat"}),
    "partner.suspended": (
        "An operator suspended a partner; their links stop attributing.",
        {"partner_id": 42, "ref_code": "pat", "reason": "Brand bidding"},
    ),
    "partner.tier_changed": (
        "A partner moved to another tier (up or down).",
        {
            "partner_id": 42,
            "from_tier": "Silver",
            "to_tier": "Gold",
            "to_tier_id": 3,
            "upgrade": True,
            "change_id": 7,
        },
    ),
    "conversion.created": (
        "A sale was recorded and counts (pending until its hold ends).",
        {
            "conversion_id": 1001,
            "transaction_id": "order-1001",
            "amount_minor": 8000,
            "currency": "USD",
            "partner_id": 42,
            "status": "pending",
            "reason": None,
            "original_amount_minor": None,
            "original_currency": None,
        },
    ),
    "conversion.held": (
        "A sale in another currency than the program's waits for its exchange rate (amount_minor 0 "
        "until then); conversion.created, flagged or rejected follows when the rate arrives.",
        {
            "conversion_id": 1004,
            "transaction_id": "order-1004",
            "amount_minor": 0,
            "currency": "USD",
            "partner_id": 42,
            "status": "held",
            "reason": None,
            "original_amount_minor": 9500,
            "original_currency": "JPY",
        },
    ),
    "conversion.flagged": (
        "A sale was held for review by a fraud rule.",
        {
            "conversion_id": 1002,
            "transaction_id": "order-1002",
            "amount_minor": 8000,
            "currency": "USD",
            "partner_id": 42,
            "status": "review",
            "reason": "duplicate",
            "original_amount_minor": None,
            "original_currency": None,
        },
    ),
    "conversion.approved": (
        "An operator accepted a sale that was held for review.",
        {
            "conversion_id": 1002,
            "transaction_id": "order-1002",
            "amount_minor": 8000,
            "currency": "USD",
            "partner_id": 42,
            "status": "pending",
            "reason": "duplicate",
            "original_amount_minor": None,
            "original_currency": None,
        },
    ),
    "conversion.rejected": (
        "A sale does not earn (on arrival, by an operator, or fully refunded), with its reason.",
        {
            "conversion_id": 1003,
            "transaction_id": "order-1003",
            "amount_minor": 8000,
            "currency": "USD",
            "partner_id": 42,
            "status": "rejected",
            "reason": "refund",
            "original_amount_minor": None,
            "original_currency": None,
        },
    ),
    "conversion.refunded": (
        "The brand refunded (part of) a sale: amount_minor is this refund, refunded_minor the total so "
        "far (in the program's currency); for a sale in another currency, original_amount_minor is "
        "this refund as sent, in original_currency.",
        {
            "conversion_id": 1001,
            "transaction_id": "order-1001",
            "partner_id": 42,
            "amount_minor": 2000,
            "refunded_minor": 2000,
            "currency": "USD",
            "refund_id": "rf-1",
            "status": "pending",
            "reason": None,
            "original_amount_minor": None,
            "original_currency": None,
        },
    ),
    "commission.created": (
        "A commission line was earned (base, tier, campaign, deal or bonus).",
        {
            "commission_id": 5001,
            "conversion_id": 1001,
            "partner_id": 42,
            "kind": "base",
            "amount_minor": 800,
            "currency": "USD",
            "status": "pending",
            "reason": None,
        },
    ),
    "commission.confirmed": (
        "Pending commission lines of a partner became confirmed (their hold ended).",
        {"partner_id": 42, "count": 3, "amount_minor": 2400, "currency": "USD"},
    ),
    "commission.reversed": (
        "A correction line took commission back (reversal or clawback), with its reason.",
        {
            "commission_id": 5002,
            "conversion_id": 1001,
            "partner_id": 42,
            "kind": "reversal",
            "amount_minor": -800,
            "currency": "USD",
            "status": "pending",
            "reason": "refund",
        },
    ),
    "payout.batch_created": (
        "A payout batch was built for a settlement date or a withdrawal.",
        {"batch_id": 12, "kind": "scheduled", "currency": "USD", "items": 8, "period_end": "2026-11-30"},
    ),
    "payout.paid": (
        "A payout item was paid to a partner.",
        {
            "batch_id": 12,
            "item_id": 90,
            "partner_id": 42,
            "amount_minor": 12345,
            "currency": "USD",
            "reference": "TRX-2026-11-30",
            "paid_on": "2026-11-30",
        },
    ),
    "payout.failed": (
        "A payment bounced; its lines are back in the partner's balance.",
        {
            "batch_id": 12,
            "item_id": 91,
            "partner_id": 42,
            "amount_minor": 12345,
            "currency": "USD",
            "reason": "IBAN rejected",
        },
    ),
    "campaign.started": (
        "A reward campaign starts (announced to the partners it is open to).",
        {"campaign_id": 3, "name": "Black week", "starts_at": "2026-11-24T00:00:00+00:00"},
    ),
    "creative.published": (
        "A creative went live in the library.",
        {"creative_id": 17, "name": "Winter banner", "kind": "banner", "channels": ["social", "ads"]},
    ),
    "campaign_request.submitted": (
        "A partner asked for a custom campaign link or rate.",
        {"request_id": 5, "partner_id": 42, "status": "requested"},
    ),
    "campaign_request.changed": (
        "A campaign request moved on: countered, accepted, approved, declined or withdrawn.",
        {"request_id": 5, "partner_id": 42, "status": "approved"},
    ),
    "message.sent": (
        "The portal sent a partner an automatic message (in the inbox, and by e-mail if they want it).",
        {"partner_id": 42, "kind": "payout_sent", "message_id": 300, "thread_id": 120},
    ),
    "webhook.endpoint_disabled": (
        "A webhook endpoint failed for three days and was switched off.",
        {"endpoint_id": 2, "url": "https://brand.example/hooks"},
    ),
    "webhook.test": (
        "A test event an operator sent from the console.",
        {"endpoint_id": 2, "note": "Sent from the partner portal's console."},
    ),
}


def written(session=None) -> None:
    """Mark ``session`` as having written events (by ``record`` or by a trigger)."""
    (session or db.session()).info[WRITTEN_KEY] = True


def record(
    type: str,  # noqa: A002 - the event's own word
    data: dict[str, Any],
    *,
    partner_id: int | None = None,
    key: str | None = None,
) -> OutboxEvent | None:
    """Add one event to the outbox, in the caller's transaction.

    ``key`` makes it happen once ever (a campaign starting): None when an event with that
    key exists already."""
    if type not in TYPES:
        raise ValueError(f"unknown event type {type!r}")
    event = OutboxEvent(type=type, partner_id=partner_id, data=data, key=key, created_at=utcnow())
    if key is None:
        db.session.add(event)
    else:
        try:
            with db.session.begin_nested():
                db.session.add(event)
        except sa.exc.IntegrityError:
            return None
    written()
    return event


def record_many(rows: list[tuple[str, dict[str, Any], int | None]]) -> None:
    """Several events in one multi-row INSERT (a bulk payment, one per partner)."""
    if not rows:
        return
    for type_, _data, _partner in rows:
        if type_ not in TYPES:
            raise ValueError(f"unknown event type {type_!r}")
    now = utcnow()
    values = [{"type": t, "data": d, "partner_id": p, "created_at": now} for t, d, p in rows]
    # The table's INSERT, not the model's: the ORM's bulk path costs more than the statement.
    db.session.execute(_INSERT_EVENTS, values[0] if len(values) == 1 else values)
    written()


_INSERT_EVENTS = sa.insert(OutboxEvent.__table__)

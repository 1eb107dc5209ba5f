"""The live-update consumer of the outbox: a Socket.IO event for the pages an event changes.

The database is the truth; these only say "look again", once per kind of change and room
for each batch the dispatcher hands on. A partner's money events refresh their earnings and
sales; operators hear of sales, applications, new payout batches and of a webhook endpoint
that was switched off. Emitted after the consumer's commit (``realtime`` queues until then).
"""

from __future__ import annotations

from portal import realtime
from portal.models import OutboxEvent

# event type prefix → the partner room's live event (portal.js turns it into portal:<name>)
_PARTNER_EVENTS = {
    "conversion.": "conversion",
    "commission.": "earnings",
    "payout.paid": "earnings",
    "payout.failed": "earnings",
    "partner.tier_changed": "rewards",
}
_OPERATOR_EVENTS = {
    "conversion.created": "conversion",
    "conversion.flagged": "conversion",
    "conversion.held": "conversion",
    "conversion.approved": "conversion",
    "conversion.rejected": "conversion",
    "conversion.refunded": "conversion",
    "partner.applied": "application",
    "webhook.endpoint_disabled": "webhook",
    "payout.batch_created": "payout",
}


def handles(event_type: str) -> bool:
    """Whether an event of this type makes any page look again (the dispatcher skips the rest)."""
    return event_type in _OPERATOR_EVENTS or any(event_type.startswith(p) for p in _PARTNER_EVENTS)


def handle_event(event: OutboxEvent) -> None:
    payload = {"event": event.type, "id": event.id}
    if event.partner_id is not None:
        for prefix, name in _PARTNER_EVENTS.items():
            if event.type.startswith(prefix):
                realtime.notify_once(event.partner_id, name, payload)
                break
    name = _OPERATOR_EVENTS.get(event.type)
    if name is not None:
        realtime.notify_operators_once(name, payload)

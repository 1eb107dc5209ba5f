"""Writing the audit log."""

from __future__ import annotations

from typing import Any

from portal.extensions import db
from portal.models import AuditEvent, User


def record_event(
    actor: User | None, action: str, subject_type: str, subject_id: int | None, **data: Any
) -> AuditEvent:
    """Add one audit entry in the current transaction."""
    event = AuditEvent(
        actor_id=actor.id if actor else None,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        data=data,
    )
    db.session.add(event)
    return event

"""Helpers that put commission lines on the books for payout tests."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import count

from portal.extensions import db
from portal.models import Commission, Conversion, Partner
from portal.models.types import utcnow

_seq = count(1)


def earn(
    partner: Partner,
    amount_minor: int,
    *,
    confirmed: bool = True,
    at: datetime | None = None,
    transaction_id: str | None = None,
) -> Commission:
    """A conversion and its base commission line, confirmed (by default) before ``at``."""
    at = at or utcnow() - timedelta(days=40)
    conversion = Conversion(
        transaction_id=transaction_id or f"tx-{next(_seq)}",
        amount_minor=amount_minor * 10,
        currency="USD",
        partner_id=partner.id,
        request_fingerprint="f",
        occurred_at=at,
    )
    line = Commission(
        conversion=conversion,
        partner_id=partner.id,
        kind="base",
        amount_minor=amount_minor,
        currency="USD",
        status="confirmed" if confirmed else "pending",
        confirm_after=at + timedelta(days=30) if not confirmed else at,
        confirmed_at=at if confirmed else None,
    )
    db.session.add_all([conversion, line])
    db.session.flush()
    return line

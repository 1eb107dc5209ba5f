"""Reading partners for the operator console."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import joinedload

from portal.extensions import db
from portal.models import AuditEvent, Partner, PartnerStatus, User


def partner_query(status: str | None = None, search: str | None = None) -> sa.Select:
    """Partners filtered by status and a name / e-mail / ref code search."""
    query = sa.select(Partner).join(Partner.user).options(joinedload(Partner.user))
    if status:
        query = query.where(Partner.status == status)
    if search:
        term = f"%{search.strip().lower()}%"
        query = query.where(
            sa.or_(
                sa.func.lower(User.name).like(term),
                User.email.like(term),
                Partner.ref_code.like(term),
            )
        )
    if status == PartnerStatus.APPLIED:
        return query.order_by(Partner.applied_at.asc(), Partner.id.asc())
    return query.order_by(Partner.applied_at.desc(), Partner.id.desc())


def count_by_status() -> dict[str, int]:
    rows = db.session.execute(sa.select(Partner.status, sa.func.count()).group_by(Partner.status))
    counts = {status.value: 0 for status in PartnerStatus}
    counts.update({status: count for status, count in rows})  # noqa: C416 - rows, not pairs
    return counts


def partner_history(partner: Partner, limit: int = 50) -> list[AuditEvent]:
    return list(
        db.session.scalars(
            sa.select(AuditEvent)
            .where(AuditEvent.subject_type == "partner", AuditEvent.subject_id == partner.id)
            .options(joinedload(AuditEvent.actor))
            .order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
            .limit(limit)
        )
    )

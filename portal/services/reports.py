"""Read models for the partner's own pages; every query is scoped to one partner."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from portal.extensions import db
from portal.models import Click, Conversion, Link, Partner


def partner_conversions(partner: Partner) -> sa.Select:
    return (
        sa.select(Conversion)
        .where(Conversion.partner_id == partner.id)
        .options(selectinload(Conversion.commissions))
        .order_by(Conversion.occurred_at.desc(), Conversion.id.desc())
    )


def partner_conversion(partner: Partner, conversion_id: int) -> Conversion | None:
    return db.session.scalars(
        sa.select(Conversion).where(Conversion.id == conversion_id, Conversion.partner_id == partner.id)
    ).first()


def click_counts(partner: Partner) -> dict[str, int]:
    """Clicks per link code for this partner (all time)."""
    rows = db.session.execute(
        sa.select(Click.code, sa.func.count()).where(Click.partner_id == partner.id).group_by(Click.code)
    )
    return {code: n for code, n in rows}  # noqa: C416 - rows, not pairs


def partner_link(partner: Partner, link_id: int) -> Link | None:
    return db.session.scalars(
        sa.select(Link).where(Link.id == link_id, Link.partner_id == partner.id)
    ).first()


def conversion_query(
    status: str | None = None, unattributed: bool = False, search: str | None = None
) -> sa.Select:
    """All conversions for operators, newest first; review queue oldest first."""
    query = sa.select(Conversion).options(
        selectinload(Conversion.commissions), selectinload(Conversion.partner)
    )
    if status:
        query = query.where(Conversion.status == status)
    if unattributed:
        query = query.where(Conversion.partner_id.is_(None))
    if search:
        term = search.strip()
        query = query.outerjoin(Partner, Partner.id == Conversion.partner_id).where(
            sa.or_(
                Conversion.transaction_id == term,
                Conversion.customer_id == term,
                Partner.ref_code == term.lower(),
            )
        )
    if status == "review":
        return query.order_by(Conversion.created_at.asc(), Conversion.id.asc())
    return query.order_by(Conversion.occurred_at.desc(), Conversion.id.desc())


def count_conversions_by_status() -> dict[str, int]:
    rows = db.session.execute(sa.select(Conversion.status, sa.func.count()).group_by(Conversion.status))
    counts = {"pending": 0, "review": 0, "rejected": 0, "held": 0}
    counts.update({status: n for status, n in rows})  # noqa: C416 - rows, not pairs
    return counts

"""Reading partners for the operator console."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from flask_babel import gettext as _
from sqlalchemy.orm import joinedload

from portal.errors import DomainError
from portal.extensions import db
from portal.models import (
    OPERATOR_ROLES,
    AuditEvent,
    Campaign,
    CommissionKind,
    Conversion,
    Partner,
    PartnerStatus,
    PrivateDeal,
    Program,
    Tag,
    Tier,
    User,
)
from portal.models.types import utcnow
from portal.services import rewards
from portal.services.audit import record_event


def partner_query(status: str | None = None, search: str | None = None, tag: str | None = None) -> sa.Select:
    """Partners filtered by status, tag and a name / e-mail / ref code search."""
    query = sa.select(Partner).join(Partner.user).options(joinedload(Partner.user))
    if status:
        query = query.where(Partner.status == status)
    if tag:
        query = query.where(Partner.tags.any(Tag.name == tag.strip().lower()))
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


# --- tags and the assigned manager ------------------------------------------------------------


def set_partner_tags(partner: Partner, actor: User, names: list[str]) -> Partner:
    """Replace the partner's tags; new tag names are created on the way."""
    from portal.services.announcements import normalise_tag

    wanted = list(dict.fromkeys(normalise_tag(name) for name in names if name.strip()))
    if len(wanted) > 20:
        raise DomainError(_("At most %(max)d tags per partner.", max=20), "tags")
    existing = {tag.name: tag for tag in db.session.scalars(sa.select(Tag).where(Tag.name.in_(wanted)))}
    for name in wanted:
        if name not in existing:
            existing[name] = Tag(name=name)
            db.session.add(existing[name])
    before = sorted(tag.name for tag in partner.tags)
    partner.tags = [existing[name] for name in wanted]
    db.session.flush()
    if before != sorted(wanted):
        record_event(actor, "partner.tagged", "partner", partner.id, before=before, after=sorted(wanted))
    return partner


def all_tags() -> list[str]:
    return list(db.session.scalars(sa.select(Tag.name).order_by(Tag.name)))


def operators() -> list[User]:
    return list(
        db.session.scalars(
            sa.select(User)
            .where(User.role.in_([role.value for role in OPERATOR_ROLES]), User.active.is_(True))
            .order_by(User.name)
        )
    )


def assign_manager(partner: Partner, actor: User, manager: User | None) -> Partner:
    """Make ``manager`` the partner's own contact (None: nobody in particular)."""
    if manager is not None and (not manager.is_operator or not manager.active):
        raise DomainError(_("Choose an active manager or admin."), "manager")
    previous = partner.manager_id
    partner.manager_id = manager.id if manager else None
    db.session.flush()
    if previous != partner.manager_id:
        record_event(
            actor,
            "partner.manager_assigned",
            "partner",
            partner.id,
            previous=previous,
            manager=partner.manager_id,
        )
    return partner


# --- the partner's terms ------------------------------------------------------------------------


@dataclass
class Terms:
    """The rate a partner's sale earns now and the rule that gives it."""

    rule: str  # CommissionKind: deal, campaign, tier or base
    rate: rewards.Rate
    tier: Tier | None = None
    campaign: Campaign | None = None
    deal: PrivateDeal | None = None
    until: datetime | None = None  # when the deal or campaign ends (None: open-ended)


def terms_of(partner: Partner, program: Program, now: datetime | None = None) -> Terms:
    """What a sale by ``partner`` would earn now, on any product and through no campaign link.

    Asked of the rewards engine itself (``rewards.load_context`` and ``rewards.decide`` on an
    unsaved sale), so the precedence — private deal > campaign > tier > base — is the one
    the commission lines are written with, not a copy of it. Product rates and deals or
    campaigns for named products apply only to those products, so they are not the terms.
    """
    sale = Conversion(
        partner_id=partner.id, occurred_at=now or utcnow(), amount_minor=0, currency=program.currency
    )
    context = rewards.load_context(sale)
    rule = rewards.decide(program, sale, context)[0].kind
    if rule == CommissionKind.DEAL:
        deal = context.deal
        return Terms(rule, rewards.Rate.of(deal), deal=deal, until=deal.ends_at)
    if rule == CommissionKind.CAMPAIGN:
        campaign = context.campaigns[0]
        return Terms(rule, rewards.Rate.of(campaign), campaign=campaign, until=campaign.ends_at)
    if rule == CommissionKind.TIER:
        return Terms(rule, rewards.Rate.of(context.tier), tier=context.tier)
    return Terms(CommissionKind.BASE, rewards.Rate.base(program))

"""Coupon codes: partners own them, shoppers type them, the tracking API attributes by them.

A code is unique in the program whatever its case: codes are kept in capitals, and what a
shop or a form sends is put in capitals before it is compared. 3-40 characters of A-Z, 0-9,
``-`` and ``_``. An operator assigns one (console or ``flask portal add-coupon``), or a
partner asks for one and a manager approves it. Only an ``active`` code attributes; a
disabled one is kept (past sales still name it) and attributes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from flask_babel import gettext as _
from sqlalchemy.exc import IntegrityError

from portal import lookups
from portal.database import stored_as_loaded
from portal.errors import DomainError
from portal.extensions import db
from portal.models import (
    Commission,
    Conversion,
    ConversionStatus,
    Coupon,
    CouponStatus,
    Partner,
    PartnerStatus,
    Signup,
    User,
)
from portal.models.coupons import CODE_MAX, CODE_MIN
from portal.models.types import utcnow
from portal.services.audit import record_event

_CODE = re.compile(rf"[A-Z0-9_-]{{{CODE_MIN},{CODE_MAX}}}")
# A partner may have this many requests waiting at once (a form is not a way to reserve names).
MAX_OPEN_REQUESTS = 3


def canonical(text: str | None) -> str | None:
    """The code as the program keeps it (capitals), or None when ``text`` cannot be a code."""
    code = (text or "").strip()
    if not code.isascii():
        return None
    code = code.upper()
    return code if _CODE.fullmatch(code) else None


def checked_code(text: str | None, field: str = "code") -> str:
    code = canonical(text)
    if code is None:
        raise DomainError(
            _(
                "A coupon code is %(min)d-%(max)d letters A-Z, digits, - or _ (no spaces).",
                min=CODE_MIN,
                max=CODE_MAX,
            ),
            field,
        )
    return code


def _taken(code: str) -> DomainError:
    return DomainError(_("The code %(code)s is already taken.", code=code), "code")


def _insert(coupon: Coupon) -> Coupon:
    if db.session.scalar(sa.select(Coupon.id).where(Coupon.code == coupon.code)) is not None:
        raise _taken(coupon.code)
    try:
        with db.session.begin_nested():
            db.session.add(coupon)
    except IntegrityError:
        raise _taken(coupon.code) from None  # a concurrent request took it first
    return coupon


def add_coupon(partner: Partner, code: str, actor: User | None) -> Coupon:
    """An operator gives ``partner`` the code; it attributes at once."""
    code = checked_code(code)
    if partner.status in (PartnerStatus.APPLIED, PartnerStatus.REJECTED):
        raise DomainError(_("Only approved partners can have coupon codes."), "partner")
    now = utcnow()
    coupon = _insert(
        Coupon(
            partner_id=partner.id,
            code=code,
            status=CouponStatus.ACTIVE,
            created_at=now,
            created_by_id=actor.id if actor else None,
            decided_at=now,
            decided_by_id=actor.id if actor else None,
        )
    )
    record_event(actor, "coupon.added", "coupon", coupon.id, code=code, partner_id=partner.id)
    return coupon


def request_coupon(partner: Partner, code: str, note: str | None) -> Coupon:
    """The partner asks for a code; it attributes nothing until a manager approves it."""
    if partner.status != PartnerStatus.APPROVED:
        raise DomainError(_("Your account must be approved and active to ask for a coupon code."))
    code = checked_code(code)
    note = (note or "").strip() or None
    if note is not None and len(note) > 200:
        raise DomainError(_("At most %(max)d characters.", max=200), "note")
    waiting = db.session.scalar(
        sa.select(sa.func.count()).where(
            Coupon.partner_id == partner.id, Coupon.status == CouponStatus.REQUESTED
        )
    )
    if waiting >= MAX_OPEN_REQUESTS:
        raise DomainError(
            _("You have %(count)d requests waiting; ask again when they are answered.", count=waiting), "code"
        )
    coupon = _insert(
        Coupon(
            partner_id=partner.id,
            code=code,
            status=CouponStatus.REQUESTED,
            note=note,
            created_at=utcnow(),
            created_by_id=partner.user_id,
        )
    )
    record_event(partner.user, "coupon.requested", "coupon", coupon.id, code=code)
    return coupon


def approve_coupon(coupon: Coupon, actor: User) -> Coupon:
    if coupon.status != CouponStatus.REQUESTED:
        raise DomainError(_("Only a requested code can be approved."))
    coupon.status = CouponStatus.ACTIVE
    coupon.decided_at = utcnow()
    coupon.decided_by_id = actor.id
    record_event(actor, "coupon.approved", "coupon", coupon.id, code=coupon.code)
    db.session.flush()
    return coupon


def decline_coupon(coupon: Coupon, actor: User) -> str:
    """Refuse a request: the code is free again (the audit log keeps who asked)."""
    if coupon.status != CouponStatus.REQUESTED:
        raise DomainError(_("Only a requested code can be declined."))
    code = coupon.code
    record_event(actor, "coupon.declined", "coupon", coupon.id, code=code, partner_id=coupon.partner_id)
    db.session.delete(coupon)
    db.session.flush()
    return code


def set_coupon_active(coupon: Coupon, active: bool, actor: User | None) -> Coupon:
    """Switch an approved code on or off; a disabled code stops attributing at once."""
    if coupon.status == CouponStatus.REQUESTED:
        raise DomainError(_("Approve or decline the request first."))
    wanted = CouponStatus.ACTIVE if active else CouponStatus.DISABLED
    if coupon.status != wanted:
        coupon.status = wanted
        record_event(
            actor, f"coupon.{'enabled' if active else 'disabled'}", "coupon", coupon.id, code=coupon.code
        )
        db.session.flush()
    return coupon


# --- reading --------------------------------------------------------------------------------


def partner_with_ref(ref_code: str | None) -> Partner | None:
    code = (ref_code or "").strip().lower()
    return db.session.scalar(sa.select(Partner).where(Partner.ref_code == code)) if code else None


def coupons_of(partner: Partner) -> list[Coupon]:
    return list(
        db.session.scalars(sa.select(Coupon).where(Coupon.partner_id == partner.id).order_by(Coupon.code))
    )


def active_codes_of(partner_id: int) -> list[str]:
    return list(
        db.session.scalars(
            sa.select(Coupon.code)
            .where(Coupon.partner_id == partner_id, Coupon.status == CouponStatus.ACTIVE)
            .order_by(Coupon.created_at, Coupon.id)
        )
    )


def partner_coupon(partner: Partner, coupon_id: int) -> Coupon | None:
    return db.session.scalar(sa.select(Coupon).where(Coupon.id == coupon_id, Coupon.partner_id == partner.id))


def all_coupons(status: str | None = None) -> list[Coupon]:
    """Every code, requests first, for the console."""
    query = sa.select(Coupon).join(Coupon.partner).options(sa.orm.contains_eager(Coupon.partner))
    if status:
        query = query.where(Coupon.status == status)
    order = sa.case((Coupon.status == CouponStatus.REQUESTED, 0), else_=1)
    return list(db.session.scalars(query.order_by(order, Coupon.code)))


def requested_count() -> int:
    return db.session.scalar(sa.select(sa.func.count()).where(Coupon.status == CouponStatus.REQUESTED))


# --- attribution (the tracking API's hot path) -------------------------------------------------------


@dataclass(frozen=True)
class CouponOwner:
    """What attribution needs of a code and its partner, as the per-process cache keeps it."""

    coupon_id: int
    code: str
    status: str
    partner_id: int
    partner_user_id: int
    partner_ref_code: str
    partner_status: str

    def partner(self) -> Partner:
        """The partner in the session, without a query (as ``tracking.partner_by_ref`` does)."""
        loaded = db.session.identity_map.get(db.session.identity_key(Partner, self.partner_id))
        if loaded is not None:
            return loaded
        return stored_as_loaded(
            Partner,
            id=self.partner_id,
            user_id=self.partner_user_id,
            ref_code=self.partner_ref_code,
            status=self.partner_status,
        )


def _owner_row(code: str) -> CouponOwner | None:
    row = db.session.execute(
        sa.select(
            Coupon.id,
            Coupon.code,
            Coupon.status,
            Partner.id,
            Partner.user_id,
            Partner.ref_code,
            Partner.status,
        )
        .join(Partner, Partner.id == Coupon.partner_id)
        .where(Coupon.code == code)
    ).first()
    return CouponOwner(*row) if row is not None else None


def owner_of(code: str) -> CouponOwner | None:
    """The code (already canonical) and its partner, from this process's look-up cache: one
    query per code per process until a coupon or partner changes (``portal.lookups``)."""
    return lookups.lookups().load("coupon_by_code", code, lambda: _owner_row(code))


# --- the partner's figures by code -------------------------------------------------------------


@dataclass(frozen=True)
class CouponFigures:
    code: str
    signups: int = 0
    conversions: int = 0
    conversions_review: int = 0
    conversions_rejected: int = 0
    sales_minor: int = 0
    commission_minor: int = 0


def _between(column, start: datetime | None, end: datetime | None) -> tuple:
    return (
        *((column >= start,) if start is not None else ()),
        *((column < end,) if end is not None else ()),
    )


def program_coupon_figures(
    start: datetime | None, end: datetime | None
) -> list[tuple[str, str, CouponFigures]]:
    """Every code's sales and signups in ``start <= occurred_at < end`` (those its own partner
    earned), with the partner's ref code: the operators' leaderboard."""
    owners = dict(
        db.session.execute(
            sa.select(Coupon.code, Partner.ref_code).join(Partner, Partner.id == Coupon.partner_id)
        ).all()
    )
    return [
        (code, owners.get(code, ""), figures) for code, figures in _coupon_figures(None, start, end).items()
    ]


def partner_coupon_figures(
    partner_id: int, start: datetime | None, end: datetime | None
) -> dict[str, CouponFigures]:
    return _coupon_figures(partner_id, start, end)


# Up to this many codes are named in the figures' queries (a program has hundreds).
_IN_LIST_MAX = 2000


def _coupon_figures(
    partner_id: int | None, start: datetime | None, end: datetime | None
) -> dict[str, CouponFigures]:
    """The partner's signups and sales attributed by each of their codes, ``start <= occurred_at
    < end``: counted from the rows themselves (codes are a small share of a partner's sales;
    the rollups are keyed by link, not by code). Sales are net of refunds and leave out
    rejected ones, commission is every line of those sales (reversals included), as the
    rollups count them."""
    # No bound where the range runs off the calendar (a custom range to 9999-12-31).
    in_range = _between(Conversion.occurred_at, start, end)
    # The partner's own codes only: under first touch another partner's code may ride on
    # this partner's sale (and the code's owner did not earn it). Driven from the codes (few)
    # through the rows' coupon_id index: the cost is the sales by code, not the history.
    whose = () if partner_id is None else (Coupon.partner_id == partner_id,)
    codes = db.session.scalars(sa.select(Coupon.id).where(*whose)).all()
    if not codes:
        return {}
    sold = sa.and_(Conversion.coupon_id == Coupon.id, Conversion.partner_id == Coupon.partner_id)
    signed_up = sa.and_(Signup.coupon_id == Coupon.id, Signup.partner_id == Coupon.partner_id)
    if len(codes) <= _IN_LIST_MAX:
        # Named outright, the codes make every planner read the rows through their coupon_id
        # index (SQLite, without statistics, would otherwise scan the sales for the join).
        sold = sa.and_(sold, Conversion.coupon_id.in_(codes))
        signed_up = sa.and_(signed_up, Signup.coupon_id.in_(codes))
    counted = Conversion.status != ConversionStatus.REJECTED
    rows = db.session.execute(
        sa.select(
            Conversion.coupon_code,
            sa.func.count(),
            sa.func.count().filter(Conversion.status == ConversionStatus.REVIEW),
            sa.func.count().filter(Conversion.status == ConversionStatus.REJECTED),
            sa.func.coalesce(
                sa.func.sum(Conversion.amount_minor - Conversion.refunded_minor).filter(counted), 0
            ),
        )
        .select_from(Coupon)
        .join(Conversion, sold)
        .where(*whose, *in_range)
        .group_by(Conversion.coupon_code)
    ).all()
    commission = dict(
        db.session.execute(
            sa.select(Conversion.coupon_code, sa.func.coalesce(sa.func.sum(Commission.amount_minor), 0))
            .select_from(Coupon)
            .join(Conversion, sold)
            .join(Commission, Commission.conversion_id == Conversion.id)
            .where(*whose, *in_range, counted)
            .group_by(Conversion.coupon_code)
        ).all()
    )
    signups = dict(
        db.session.execute(
            sa.select(Signup.coupon_code, sa.func.count())
            .select_from(Coupon)
            .join(Signup, signed_up)
            .where(*whose, *_between(Signup.occurred_at, start, end))
            .group_by(Signup.coupon_code)
        ).all()
    )
    result = {
        code: CouponFigures(
            code, signups.get(code, 0), n, review, rejected, int(sales), int(commission.get(code, 0))
        )
        for code, n, review, rejected, sales in rows
    }
    for code, count in signups.items():
        result.setdefault(code, CouponFigures(code, signups=count))
    return result

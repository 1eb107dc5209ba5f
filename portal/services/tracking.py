"""Signups, conversions and refunds reported by the brand's servers; the operators' review.

Attribution, in order: a click id, then a coupon code, then a ref code, then the
customer's earlier referral (their signup). One exception: a coupon code on the sale
beats an older click of *another* partner, unless the program chose "first touch"
(``Program.coupon_attribution``); a click that is out of the cookie window never beats a
coupon. A click or a signup counts inside the cookie window; only approved partners earn.
An unknown, disabled or not yet approved code attributes nothing (the next rule decides)
and is kept on the row all the same.

A sale in another currency than the program's is converted at the rate of its day
(``portal.services.fx`` has the look-up rules) or held until one arrives (``convert_waiting``).

Why it is long: a sale's whole path lives here — attribution, screening, the insert, refunds
and the conversion of a sale in another currency — because they share the same private
rules (a rejection, the fraud screening, the event data of a conversion); split apart, each
would need them exported or written twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from flask_babel import get_locale
from flask_babel import gettext as _
from sqlalchemy import orm
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value

from portal import lookups, realtime
from portal.database import (
    JSON_FROM_ROWS,
    begin_write,
    dialect_insert,
    insert_from_json,
    json_rows,
    lock_partner,
    stored_as_loaded,
)
from portal.errors import DomainError
from portal.extensions import db

# Re-exported for the console's forms: its home is portal.formatting.
from portal.formatting import reason_label as reason_label
from portal.models import (
    AttributionMethod,
    Click,
    Conversion,
    ConversionStatus,
    CouponAttribution,
    CouponStatus,
    Partner,
    PartnerStatus,
    Program,
    Refund,
    RejectionReason,
    Signup,
    User,
)
from portal.models.types import utcnow
from portal.money import format_money
from portal.services import clicks, commissions, coupons, events, fx, rewards, rollups
from portal.services.audit import record_event
from portal.services.program import get_program


class Conflict(DomainError):
    code = "conflict"


def fingerprint(data: dict) -> str:
    """A stable digest of what the client sent, to tell a retry from a different request."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def meaning_fingerprint(data) -> str:
    """The digest of what a request means: its parsed fields (a dataclass), amounts in minor
    units and times as UTC instants. A retry written differently ("49.9" for "49.90", "Z" for
    "+00:00", its keys in another order) is the same request, not a conflict.

    Rows written before this rule hold the digest of the raw body (``fingerprint``): the
    comparisons accept that one too (``_same_or_conflict``'s ``legacy``)."""
    fields = {}
    # The fields as ``dataclasses.asdict`` gives them (they are flat: no deep copy needed).
    for field_ in dataclasses.fields(data):
        key, value = field_.name, getattr(data, field_.name)
        if isinstance(value, datetime) and value.tzinfo is not None:
            value = value.astimezone(UTC).isoformat()
        fields[key] = value
    return fingerprint(fields)


@dataclass
class SignupInput:
    customer_id: str
    click_id: str | None = None
    ref: str | None = None
    email: str | None = None
    occurred_at: datetime | None = None
    coupon: str | None = None


@dataclass
class ConversionInput:
    transaction_id: str
    amount_minor: int
    currency: str
    customer_id: str | None = None
    click_id: str | None = None
    ref: str | None = None
    product_id: str | None = None
    occurred_at: datetime | None = None
    coupon: str | None = None


@dataclass
class RefundInput:
    amount_minor: int | None = None  # None: whatever is left of the sale
    note: str | None = None
    refund_id: str | None = None


@dataclass
class Attribution:
    partner: Partner | None = None
    click: Click | None = None
    signup: Signup | None = None
    method: str | None = None
    note: str | None = None
    out_of_window: bool = False
    # The coupon text as kept on the row, and the program's code it names (any status).
    coupon_code: str | None = None
    coupon_id: int | None = None


# A partner without its tags (loaded eagerly elsewhere): attribution never reads them.
_PARTNER_ONLY = (orm.lazyload(Partner.tags),)


def _partner_row(code: str) -> tuple | None:
    row = db.session.execute(
        sa.select(Partner.id, Partner.user_id, Partner.ref_code, Partner.status).where(
            Partner.ref_code == code
        )
    ).first()
    return tuple(row) if row is not None else None


def partner_by_ref(ref: str) -> Partner | None:
    """The partner whose ref code this is, in the session without a query when this process
    knows it (``portal.lookups`` keeps its id, user, code and status). Any other attribute
    is loaded fresh when read."""
    code = ref.strip().lower()
    if not code or len(code) > 32:
        return None
    row = lookups.lookups().load("partner_by_ref", code, lambda: _partner_row(code))
    if row is None:
        return None
    partner_id, user_id, ref_code, status = row
    loaded = db.session.identity_map.get(db.session.identity_key(Partner, partner_id))
    if loaded is not None:
        return loaded
    # As if loaded: clean, the other columns unloaded (cheaper than Session.merge).
    return stored_as_loaded(Partner, id=partner_id, user_id=user_id, ref_code=ref_code, status=status)


def _window(program: Program) -> timedelta:
    return timedelta(days=program.cookie_window_days)


def _earning_partner(partner: Partner | None, found: Attribution) -> Attribution:
    if partner is not None and partner.status != PartnerStatus.APPROVED:
        return Attribution(note=f"partner {partner.ref_code} is {partner.status}; not attributed")
    return found


def _joined(notes: list[str]) -> str | None:
    return "; ".join(notes)[:200] or None  # the column's length


def _coupon(text: str | None, notes: list[str]) -> tuple[str | None, coupons.CouponOwner | None, int | None]:
    """(the text kept on the row, the code's owner when it attributes, the code's id when the
    program has it). No query without a coupon; with one, the process's look-up cache."""
    if not text:
        return None, None, None
    code = coupons.canonical(text)
    if code is None:
        notes.append("unknown coupon")
        return text.strip(), None, None
    owner = coupons.owner_of(code)
    if owner is None:
        notes.append("unknown coupon")
        return code, None, None
    if owner.status != CouponStatus.ACTIVE:
        notes.append(f"coupon {code} is {owner.status}")
        return code, None, owner.coupon_id
    return code, owner, owner.coupon_id


def attribute(
    program: Program,
    *,
    occurred_at: datetime,
    click_id: str | None,
    ref: str | None,
    customer_id: str | None = None,
    coupon: str | None = None,
) -> Attribution:
    """Who referred this event, and by which rule (the order is in the module's docstring)."""
    notes: list[str] = []
    coupon_code, owner, coupon_id = _coupon(coupon, notes)
    found = _attribute(program, occurred_at, click_id, ref, customer_id, owner, notes)
    found.coupon_code, found.coupon_id = coupon_code, coupon_id
    return found


def _attribute(
    program: Program,
    occurred_at: datetime,
    click_id: str | None,
    ref: str | None,
    customer_id: str | None,
    owner: coupons.CouponOwner | None,
    notes: list[str],
) -> Attribution:
    if click_id:
        # A signed id whose row the redirect has not written yet (buffered, or spooled in an
        # outage) still names its click: the row is written now, so the conversion's
        # foreign key holds and the late row is skipped as a duplicate.
        click = db.session.get(Click, click_id) or clicks.click_from_id(click_id)
        if click is not None:
            late = occurred_at - click.created_at > _window(program)
            click_wins = (
                owner is None
                or owner.partner_id == click.partner_id
                or (program.coupon_attribution == CouponAttribution.FIRST_TOUCH and not late)
            )
            if click_wins:
                if owner is not None and owner.partner_id != click.partner_id:
                    notes.append(f"first touch: the click beat coupon {owner.code}")
                found = Attribution(
                    partner=db.session.get(Partner, click.partner_id, options=_PARTNER_ONLY),
                    click=click,
                    method=AttributionMethod.CLICK,
                    out_of_window=late,
                    note=_joined(notes),
                )
                return _earning_partner(found.partner, found)
            notes.append(f"coupon {owner.code} beat an older click of another partner")
        else:
            notes.append("unknown click id")
    if owner is not None:
        partner = owner.partner()
        found = Attribution(partner=partner, method=AttributionMethod.COUPON, note=_joined(notes))
        return _earning_partner(partner, found)
    if ref:
        partner = partner_by_ref(ref)
        if partner is not None:
            found = Attribution(partner=partner, method=AttributionMethod.REF, note=_joined(notes))
            return _earning_partner(partner, found)
        notes.append("unknown ref")
    if customer_id:
        signup = db.session.scalars(sa.select(Signup).where(Signup.customer_id == customer_id)).first()
        if signup is not None and signup.partner_id is not None:
            found = Attribution(
                partner=signup.partner,
                signup=signup,
                click=signup.click,
                method=AttributionMethod.CUSTOMER,
                out_of_window=occurred_at - signup.occurred_at > _window(program),
                note=_joined(notes),
            )
            return _earning_partner(found.partner, found)
    return Attribution(note=_joined(notes))


def _is_self_referral_by_email(partner: Partner | None, email: str | None) -> bool:
    return bool(partner and email and partner.user.email == email.strip().lower())


# --- signups ------------------------------------------------------------------


def record_signup(program: Program, data: SignupInput, raw: dict) -> tuple[Signup, bool]:
    """Record a customer's signup and who referred them. Returns (signup, created)."""
    digest, legacy = meaning_fingerprint(data), fingerprint(raw)
    existing = db.session.scalars(sa.select(Signup).where(Signup.customer_id == data.customer_id)).first()
    if existing is not None:
        return _same_or_conflict(existing, digest, "customer_id", legacy), False

    occurred_at = data.occurred_at or utcnow()
    found = attribute(
        program, occurred_at=occurred_at, click_id=data.click_id, ref=data.ref, coupon=data.coupon
    )
    note = found.note
    partner = found.partner
    if found.out_of_window:
        partner, note = None, "click older than the cookie window"
    elif program.fraud_self_referral and _is_self_referral_by_email(partner, data.email):
        partner, note = None, "self-referral: the customer's e-mail is the partner's"
    signup = Signup(
        customer_id=data.customer_id,
        email=data.email.strip().lower() if data.email else None,
        partner_id=partner.id if partner else None,
        click_id=found.click.id if found.click else None,
        coupon_code=found.coupon_code,
        coupon_id=found.coupon_id,
        attribution_method=found.method if partner else None,
        attribution_note=note,
        request_fingerprint=digest,
        occurred_at=occurred_at,
    )
    try:
        with db.session.begin_nested():
            db.session.add(signup)
    except IntegrityError:
        existing = db.session.scalars(sa.select(Signup).where(Signup.customer_id == data.customer_id)).one()
        return _same_or_conflict(existing, digest, "customer_id", legacy), False
    if partner is not None:
        rollups.count_signup(signup)
        realtime.notify(partner.id, "signup", {"customer": signup.id})
    return signup, True


def _same_or_conflict(existing, digest: str, field: str, legacy: str | None = None):
    if existing.request_fingerprint not in (digest, legacy):
        raise Conflict(_("This %(field)s was already reported with different details.", field=field), field)
    return existing


# --- conversions --------------------------------------------------------------


def _find_conversion(transaction_id: str) -> Conversion | None:
    return db.session.scalars(
        sa.select(Conversion).where(Conversion.transaction_id == transaction_id)
    ).first()


def _looks_duplicate(program: Program, conversion: Conversion) -> bool:
    if not conversion.customer_id:
        return False
    window = timedelta(minutes=program.duplicate_window_minutes)
    other = db.session.scalar(
        sa.select(sa.func.count()).where(
            Conversion.customer_id == conversion.customer_id,
            Conversion.amount_minor == conversion.amount_minor,
            Conversion.transaction_id != conversion.transaction_id,
            Conversion.occurred_at.between(conversion.occurred_at - window, conversion.occurred_at + window),
        )
    )
    return bool(other)


def _flag_for_review(program: Program, conversion: Conversion, partner: Partner, click: Click | None) -> None:
    """The fraud rules that hold a sale for an operator (it earns once approved)."""
    if program.fraud_self_referral and click is not None and partner.user.last_login_ip_hash == click.ip_hash:
        conversion.status = ConversionStatus.REVIEW
        conversion.flagged_reason = RejectionReason.SELF_REFERRAL
    elif program.fraud_duplicate_order and _looks_duplicate(program, conversion):
        conversion.status = ConversionStatus.REVIEW
        conversion.flagged_reason = RejectionReason.DUPLICATE


def _in_program_currency(program: Program, conversion: Conversion) -> bool:
    """A sale in another currency: keep what the shop sent, and convert it at the rate of its
    day when one is known (``portal.services.fx`` has the rules). False while it waits for a
    rate (its amount in the program's currency is 0 until then)."""
    conversion.original_amount_minor = conversion.amount_minor
    conversion.original_currency = conversion.currency
    conversion.original_refunded_minor = 0
    conversion.currency = program.currency
    conversion.amount_minor = 0
    found = fx.find_rate(conversion.original_currency, program.currency, fx.sale_day(conversion.occurred_at))
    if found is None:
        return False
    _set_rate(conversion, found)
    if program.max_sale_minor is not None and conversion.amount_minor > program.max_sale_minor:
        raise DomainError(
            _(
                "This sale is %(amount)s in the program's currency, more than the program's maximum sale.",
                amount=_money(conversion.amount_minor, program.currency),
            ),
            "amount",
        )
    return True


def _set_rate(conversion: Conversion, found: fx.FoundRate) -> None:
    conversion.fx_rate, conversion.fx_rate_day, conversion.fx_source = (
        found.rate,
        found.day,
        found.source[:40],
    )
    conversion.amount_minor = fx.convert_minor(
        conversion.original_amount_minor, conversion.original_currency, conversion.currency, found.rate
    )
    conversion.refunded_minor = fx.convert_minor(
        conversion.original_refunded_minor, conversion.original_currency, conversion.currency, found.rate
    )


@dataclass
class PreparedSale:
    """A sale read and decided, not written yet (``prepare_conversion``): its row, its partner
    and the probe its insert reads the partner's tier counters with."""

    conversion: Conversion
    partner: Partner | None
    probe: rewards.TierProbe | None
    digest: str
    raw: dict  # the body as sent: its digest (``legacy_digest``) only when a stored row is met

    @property
    def legacy_digest(self) -> str:
        """The raw body's digest, as rows written before meaning_fingerprint hold."""
        return fingerprint(self.raw)

    @property
    def earning_partner_id(self) -> int | None:
        """The partner this sale earns for (whose lock its write takes), or None."""
        if self.partner is not None and self.conversion.status == ConversionStatus.PENDING:
            return self.partner.id
        return None


def record_conversion(
    program: Program,
    data: ConversionInput,
    raw: dict,
    *,
    defer_messages: bool = False,
    received_at: datetime | None = None,
) -> tuple[Conversion, bool]:
    """Record a sale once per transaction id; attribute it, screen it, and earn its commission.

    The hold runs from ``received_at`` (now, unless a replay of history such as the demo
    says when), never from the client's ``occurred_at``; a sale that says it happened
    longer ago than the cookie window is stored rejected ``out_of_window``.

    A sale in another currency is converted at the rate of its day, or stored ``held`` until
    one arrives (``convert_waiting``); screened for review once converted.

    Its events (``conversion.created`` / ``flagged`` / ``rejected`` / ``held``, one per commission line)
    are written by the database with the rows (triggers, migration 0017_outbox): no statement
    of their own. ``defer_messages`` is accepted for the API's sake and changes nothing: every
    reaction (messages, e-mail, webhooks) now runs from the outbox after the commit.

    Two steps, which ``portal.salewriter`` also runs for many sales in one transaction:
    ``prepare_conversion`` (reads only) and ``write_conversion``."""
    sale = prepare_conversion(program, data, raw, received_at=received_at)
    # Only now the write lock (SQLite; it was read from a snapshot until here, so a sale
    # holds the lock for its writes only).
    begin_write(db.session())
    return write_conversion(program, sale)


def prepare_conversion(
    program: Program, data: ConversionInput, raw: dict, *, received_at: datetime | None = None
) -> PreparedSale:
    """Everything a sale decides before it writes: attribution, the window, the currency and
    the screening. Reads only; a ``DomainError`` here (a sale over the maximum) wrote nothing."""
    digest = meaning_fingerprint(data)
    # No look-up first: the transaction id is unique, so a repeat fails its insert below
    # and is answered from the row already there (retries are rare; sales are not).
    received_at = received_at or utcnow()
    occurred_at = data.occurred_at or received_at
    backdated = received_at - occurred_at > _window(program)
    found = attribute(
        program,
        occurred_at=occurred_at,
        click_id=data.click_id,
        ref=data.ref,
        customer_id=data.customer_id,
        coupon=data.coupon,
    )
    signup = found.signup
    if signup is None and data.customer_id:
        signup = db.session.scalars(sa.select(Signup).where(Signup.customer_id == data.customer_id)).first()
    conversion = Conversion(
        transaction_id=data.transaction_id,
        amount_minor=data.amount_minor,
        currency=data.currency,
        customer_id=data.customer_id,
        product_id=data.product_id,
        partner_id=found.partner.id if found.partner else None,
        click_id=found.click.id if found.click else None,
        signup_id=signup.id if signup else None,
        coupon_code=found.coupon_code,
        coupon_id=found.coupon_id,
        attribution_method=found.method if found.partner else None,
        attribution_note=found.note,
        status=ConversionStatus.PENDING,
        request_fingerprint=digest,
        occurred_at=occurred_at,
        created_at=received_at,
    )
    waiting = data.currency != program.currency and not _in_program_currency(program, conversion)
    partner = found.partner
    if backdated:
        _reject(
            conversion,
            RejectionReason.OUT_OF_WINDOW,
            f"occurred_at is more than {program.cookie_window_days} days before the sale was received",
        )
    elif partner is not None:
        if found.out_of_window:
            _reject(conversion, RejectionReason.OUT_OF_WINDOW, None)
        elif program.fraud_self_referral and _is_self_referral_by_email(
            partner, signup.email if signup else None
        ):
            _reject(conversion, RejectionReason.SELF_REFERRAL, "The customer's e-mail is the partner's own.")
        elif waiting:
            conversion.status = ConversionStatus.HELD  # screened for review once converted
        else:
            _flag_for_review(program, conversion, partner, found.click)
    elif waiting:
        conversion.status = ConversionStatus.HELD
    # A sale that earns asks about its partner's tier with its own INSERT (one round trip).
    probe = (
        rewards.tier_probe(program, partner.id, occurred_at)
        if partner is not None and conversion.status == ConversionStatus.PENDING
        else None
    )
    return PreparedSale(conversion=conversion, partner=partner, probe=probe, digest=digest, raw=raw)


class SaleBatch:
    """What the sales of one transaction leave to write together (``portal.salewriter``):
    their commission lines in one INSERT, then their rollups in one tally."""

    def __init__(self) -> None:
        self.lines = commissions.PendingLines()
        self.conversions: list[Conversion] = []

    def finish(self, program: Program) -> None:
        """Write the batch's lines and rollups; every conversion then has its lines."""
        self.lines.insert()
        tally = rollups.Tally()
        for conversion in self.conversions:
            rollups.count_conversion(conversion, timezone=program.timezone, into=tally)
        rollups.write(db.session.connection(), tally)


def write_conversion(
    program: Program,
    sale: PreparedSale,
    *,
    locked: bool = False,
    batch: SaleBatch | None = None,
) -> tuple[Conversion, bool]:
    """Write a prepared sale in the session's write transaction: (the conversion, True), or
    (the one stored before under its transaction id, False) — a ``Conflict`` if that one was
    reported with different details.

    On PostgreSQL the partner's own lock comes first (``locked``: the caller holds it
    already): one partner's sales one at a time, each reading the counters the one before
    left (its tier). ``batch``: leave its commission lines and rollups there, written with
    the other sales' by ``SaleBatch.finish`` (a new conversion has no lines until then)."""
    conversion, partner = sale.conversion, sale.partner
    if sale.earning_partner_id is not None and not locked:
        lock_partner(db.session(), sale.earning_partner_id)
    stored, facts = _insert_once(conversion, sale.probe)
    if stored is None:
        # Reported before (a retry), or a concurrent request with the same transaction id won.
        return _reported_before(sale), False
    _earn_stored(program, stored, partner, facts, batch)
    return stored, True


def write_conversions(
    program: Program, sales: list[PreparedSale], batch: SaleBatch
) -> list[tuple[Conversion, bool] | None]:
    """``write_conversion`` for many prepared sales in the session's write transaction, in
    few statements: one SELECT reads every earning partner's tier counters
    (``rewards.read_probes``), one INSERT stores every sale. Each sale's outcome in order:
    (conversion, created), or None for a ``Conflict`` (its transaction id was reported before
    with other details; nothing written for it).

    The caller holds every earning partner's lock (PostgreSQL; SQLite's write lock serves
    every partner), and gives at most one sale per partner and per transaction id: each
    then reads the counters every earlier sale of its partner left, as if written alone."""
    tids = [sale.conversion.transaction_id for sale in sales]
    earning = [sale.earning_partner_id for sale in sales if sale.earning_partner_id is not None]
    if len(set(tids)) != len(tids) or len(set(earning)) != len(earning):
        raise ValueError("write_conversions: one sale per transaction id and per partner")
    facts = rewards.read_probes(sale.probe for sale in sales if sale.probe is not None)
    rows = [_insert_values(sale.conversion) for sale in sales]
    ids = _insert_many(rows)
    outcomes: list[tuple[Conversion, bool] | None] = []
    for sale, values in zip(sales, rows, strict=True):
        conversion_id = ids.get(values["transaction_id"])
        if conversion_id is None:
            try:
                outcomes.append((_reported_before(sale), False))
            except Conflict:
                outcomes.append(None)
            continue
        conversion = stored_as_loaded(Conversion, id=conversion_id, **values)
        partner_facts = facts.get(sale.partner.id) if sale.probe is not None else None
        _earn_stored(program, conversion, sale.partner, partner_facts, batch)
        outcomes.append((conversion, True))
    return outcomes


def _reported_before(sale: PreparedSale) -> Conversion:
    """The conversion stored before under the sale's transaction id (a retry, or a concurrent
    request that won): the sale's answer, or a ``Conflict`` if it came with other details."""
    transaction_id = sale.conversion.transaction_id
    existing = _find_conversion(transaction_id)
    if existing is None:
        raise RuntimeError(f"conversion {transaction_id!r} neither inserted nor found")
    return _same_or_conflict(existing, sale.digest, "transaction_id", sale.legacy_digest)


def _earn_stored(
    program: Program,
    conversion: Conversion,
    partner: Partner | None,
    facts: rewards.PartnerFacts | None,
    batch: SaleBatch | None,
) -> None:
    """A conversion just inserted: its commission lines (in ``batch``, or now) and rollups."""
    # What the answer and the events read, from the objects in hand instead of queries.
    set_committed_value(conversion, "partner", partner)
    set_committed_value(conversion, "commissions", [])
    pending = batch.lines if batch is not None else None
    if conversion.status == ConversionStatus.PENDING and partner is not None:
        commissions.earn(program, conversion, facts, pending=pending)
    if batch is not None:
        batch.conversions.append(conversion)
    else:
        # The time zone of the program in hand (the API's is cached: a change reaches every
        # worker within TRACKING_CACHE_CHECK_SECONDS; rebuild-rollups recounts after one anyway).
        rollups.count_conversion(conversion, timezone=program.timezone)
    # Open pages hear of it from the outbox's live consumer (its events, after the commit).
    events.written()  # by the triggers: the dispatcher looks after the commit


_INSERT_MANY: dict[str, sa.Insert] = {}


def _insert_many(rows: list[dict]) -> dict[str, int]:
    """INSERT … ON CONFLICT (transaction_id) DO NOTHING RETURNING id, transaction_id for
    every row in one statement: the ids of the rows stored, by transaction id (a row whose
    transaction id was taken before is not among them)."""
    connection = db.session.connection()
    dialect = connection.dialect.name
    if dialect == "postgresql" and len(rows) >= JSON_FROM_ROWS:
        statement = _INSERT_MANY.get("json")
        if statement is None:
            statement = _INSERT_MANY["json"] = insert_from_json(
                Conversion.__table__,
                _CONVERSION_COLUMNS,
                "ON CONFLICT (transaction_id) DO NOTHING RETURNING id, transaction_id",
            )
        stored = connection.execute(statement, {"rows": json_rows(rows)}).all()
        return {transaction_id: conversion_id for conversion_id, transaction_id in stored}
    statement = _INSERT_MANY.get(dialect)
    if statement is None:
        statement = _INSERT_MANY[dialect] = _insert_unless_reported(dialect).returning(
            Conversion.__table__.c.transaction_id
        )
    if len(rows) == 1:  # executemany's path costs more than it saves for one row
        stored = connection.execute(statement, rows[0]).all()
    else:
        stored = connection.execute(statement, rows).all()
    return {transaction_id: conversion_id for conversion_id, transaction_id in stored}


def _insert_unless_reported(dialect: str) -> sa.Insert:
    """A conversion's INSERT … ON CONFLICT (transaction_id) DO NOTHING RETURNING id."""
    table = Conversion.__table__
    return (
        dialect_insert(dialect, table)
        .on_conflict_do_nothing(index_elements=["transaction_id"])
        .returning(table.c.id)
    )


def _insert_values(conversion: Conversion) -> dict:
    values = {key: getattr(conversion, key) for key in _CONVERSION_COLUMNS}
    values["refunded_minor"] = values["refunded_minor"] or 0
    values["created_at"] = values["created_at"] or utcnow()
    return values


_INSERT_ONCE: dict[tuple[str, tuple | None], sa.Insert] = {}
_CONVERSION_COLUMNS = tuple(column.key for column in Conversion.__table__.columns if column.key != "id")


def _insert_once(
    conversion: Conversion, probe: rewards.TierProbe | None = None
) -> tuple[Conversion | None, rewards.PartnerFacts | None]:
    """INSERT … ON CONFLICT (transaction_id) DO NOTHING RETURNING id: one statement, no
    SAVEPOINT, no unit of work; then the stored row as a clean ORM object in the session.
    ``probe``'s columns (the partner's tier and window counters) come back with the id, read
    in the same statement. (None, None) when the transaction id was already taken."""
    dialect = db.session.get_bind().dialect.name
    shape = probe.shape if probe is not None else None
    statement = _INSERT_ONCE.get((dialect, shape))
    if statement is None:
        statement = _insert_unless_reported(dialect)
        if probe is not None:
            statement = statement.returning(*probe.columns)
        _INSERT_ONCE[(dialect, shape)] = statement
    values = _insert_values(conversion)
    row = db.session.execute(statement, {**values, **probe.params} if probe else values).first()
    if row is None:
        return None, None
    facts = probe.read(row) if probe is not None else None
    return stored_as_loaded(Conversion, id=row[0], **values), facts


def _reject(conversion: Conversion, reason: str, note: str | None) -> None:
    conversion.status = ConversionStatus.REJECTED
    conversion.rejection_reason = reason
    conversion.rejection_note = note


def _conversion_data(conversion: Conversion) -> dict:
    """A conversion as its events carry it (the same keys the insert trigger writes)."""
    return {
        "conversion_id": conversion.id,
        "transaction_id": conversion.transaction_id,
        "amount_minor": conversion.amount_minor,
        "currency": conversion.currency,
        "partner_id": conversion.partner_id,
        "status": conversion.status,
        "reason": conversion.rejection_reason or conversion.flagged_reason,
        "original_amount_minor": conversion.original_amount_minor,
        "original_currency": conversion.original_currency,
    }


_STATUS_EVENT = {
    ConversionStatus.PENDING: "conversion.created",
    ConversionStatus.REVIEW: "conversion.flagged",
    ConversionStatus.REJECTED: "conversion.rejected",
}


_WAITING = (Conversion.original_currency.is_not(None), Conversion.fx_rate.is_(None))


def waiting_for_rate() -> sa.Select:
    """Sales in another currency not converted yet (held, or rejected before a rate came)."""
    return sa.select(Conversion).where(*_WAITING)


def count_waiting_for_rate() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(Conversion).where(*_WAITING)) or 0


def convert_waiting(program: Program) -> int:
    """Convert every sale still waiting for an exchange rate that now has one (after rates were
    added or imported, in the same transaction). A held sale is screened as a new one would
    be and earns; its event (``conversion.created`` / ``flagged`` / ``rejected``) follows its
    ``conversion.held``. A rejected one only gets its amounts. Returns how many converted."""
    converted = 0
    rates: dict[tuple, fx.FoundRate | None] = {}  # one look-up per currency pair and day
    for conversion in db.session.scalars(waiting_for_rate().order_by(Conversion.id).with_for_update()).all():
        key = (conversion.original_currency, conversion.currency, fx.sale_day(conversion.occurred_at))
        if key not in rates:
            rates[key] = fx.find_rate(*key)
        found = rates[key]
        if found is None:
            continue
        _convert_one(program, conversion, found)
        converted += 1
    return converted


def _convert_one(program: Program, conversion: Conversion, found: fx.FoundRate) -> None:
    held = conversion.status == ConversionStatus.HELD
    if held and conversion.partner_id is not None:
        lock_partner(db.session(), conversion.partner_id)
    before = rollups.contribution(conversion, program.timezone)
    _set_rate(conversion, found)
    if held:
        if conversion.original_refunded_minor == conversion.original_amount_minor:
            _reject(conversion, RejectionReason.REFUND, "refunded in full before its exchange rate arrived")
        elif program.max_sale_minor is not None and conversion.amount_minor > program.max_sale_minor:
            # Converted on arrival it would have been refused (422); held, it was answered
            # already, so it is kept but never earns.
            _reject(
                conversion,
                RejectionReason.OTHER,
                f"{_money(conversion.amount_minor, conversion.currency)} once converted, "
                f"more than the program's maximum sale",
            )
        else:
            conversion.status = ConversionStatus.PENDING
            if conversion.partner is not None:
                _flag_for_review(program, conversion, conversion.partner, conversion.click)
        db.session.flush()
        if conversion.status == ConversionStatus.PENDING and conversion.partner is not None:
            commissions.earn(program, conversion)
            if conversion.refunded_minor:
                commissions.reverse_for_refund(conversion, None)
        events.record(
            _STATUS_EVENT[conversion.status], _conversion_data(conversion), partner_id=conversion.partner_id
        )
    record_event(
        None,
        "conversion.converted",
        "conversion",
        conversion.id,
        rate=found.rate,
        rate_day=found.day.isoformat(),
        source=found.source,
        amount_minor=conversion.amount_minor,
    )
    db.session.flush()
    rollups.count_conversion(conversion, before, timezone=program.timezone)


def _money(minor: int, currency: str) -> str:
    return format_money(minor, currency, locale=str(get_locale() or "en"))


@dataclass
class RefundOutcome:
    """What a refund request came to. ``replay``: this ``refund_id`` was applied before with
    the same body; answer ``refund.response`` (the first answer) and change nothing.
    ``refund`` is None when nothing was refunded (a full refund of a fully refunded sale)."""

    conversion: Conversion
    refund: Refund | None
    replay: bool = False


def lock_conversion(conversion: Conversion) -> Conversion:
    """Take the conversion's row lock (SQLite: the write lock ``begin_write`` took) and read
    it afresh, its commission lines with it: what another refund committed meanwhile counts."""
    return db.session.scalars(
        sa.select(Conversion)
        .where(Conversion.id == conversion.id)
        .with_for_update(of=Conversion)
        .options(orm.selectinload(Conversion.commissions))
        .execution_options(populate_existing=True)
    ).one()


def _earlier_refund(conversion: Conversion, refund_id: str, digest: str, legacy: str) -> Refund | None:
    earlier = db.session.scalars(
        sa.select(Refund).where(Refund.conversion_id == conversion.id, Refund.refund_id == refund_id)
    ).first()
    if earlier is not None and earlier.request_fingerprint not in (digest, legacy):
        raise Conflict(_("This refund_id was already reported with different details."), "refund_id")
    return earlier


def apply_refund(
    conversion: Conversion,
    amount_minor: int | None,
    note: str | None,
    *,
    refund_id: str | None = None,
    raw: dict | None = None,
) -> RefundOutcome:
    """A full (no amount) or partial refund; the matching share of commission is reversed
    (reason ``refund``) and a ``Refund`` row records it.

    Atomic: the conversion is locked and read afresh first, so refunds sent in parallel add
    up exactly. Idempotent: the same ``refund_id`` again is a replay (same body) or a
    ``Conflict`` (different body); without one, refunding a fully refunded sale changes
    nothing. A retry is told from a new request by what it means (amount, note, refund_id),
    not how it was written; ``raw`` is what the client sent, whose digest rows written before
    that rule hold."""
    meaning = RefundInput(amount_minor=amount_minor, note=note, refund_id=refund_id)
    digest = meaning_fingerprint(meaning)
    legacy = fingerprint(raw) if raw is not None else digest
    # Shares the program row with other refunds and waits for a settlement being built (it
    # holds the row for update): whether the sale's lines are in a payout decides whether the
    # refund's line is a reversal or a clawback, so it must be read after that batch commits.
    db.session.execute(sa.select(Program.id).with_for_update(read=True))
    conversion = lock_conversion(conversion)
    if refund_id is not None:
        earlier = _earlier_refund(conversion, refund_id, digest, legacy)
        if earlier is not None:
            return RefundOutcome(conversion, earlier, replay=True)
    # Refunds come in the sale's own currency (a sale in another currency: its original).
    foreign = conversion.original_currency is not None
    sale_minor = conversion.original_amount_minor if foreign else conversion.amount_minor
    sale_refunded = conversion.original_refunded_minor if foreign else conversion.refunded_minor
    sale_currency = conversion.original_currency if foreign else conversion.currency
    remaining = sale_minor - sale_refunded
    if amount_minor is None:
        if remaining == 0:
            return RefundOutcome(conversion, None)  # already fully refunded: repeating it changes nothing
        amount_minor = remaining
    if amount_minor <= 0:
        raise DomainError(_("The refund must be more than zero."), "amount")
    if amount_minor > remaining:
        raise DomainError(
            _(
                "Only %(remaining)s of this sale is left to refund.",
                remaining=_money(remaining, sale_currency),
            ),
            "amount",
        )
    refund = Refund(
        conversion_id=conversion.id,
        refund_id=refund_id,
        amount_minor=amount_minor,
        currency=sale_currency,
        note=note,
        request_fingerprint=digest,
        created_at=utcnow(),
    )
    try:
        with db.session.begin_nested():
            db.session.add(refund)
    except IntegrityError:
        # Only a writer that skipped the lock can get here; answer as a retry would be.
        earlier = _earlier_refund(conversion, refund_id, digest, legacy) if refund_id is not None else None
        if earlier is None:
            raise
        return RefundOutcome(conversion, earlier, replay=True)
    before = rollups.contribution(conversion)
    refunded_before = conversion.refunded_minor
    if foreign:
        conversion.original_refunded_minor += amount_minor
        if conversion.fx_rate is not None:
            # Cumulative at the sale's rate: refunds in parts add up exactly to the whole.
            conversion.refunded_minor = fx.convert_minor(
                conversion.original_refunded_minor, sale_currency, conversion.currency, conversion.fx_rate
            )
    else:
        conversion.refunded_minor += amount_minor
    if sale_refunded + amount_minor == sale_minor and conversion.status != ConversionStatus.REJECTED:
        _reject(conversion, RejectionReason.REFUND, note)
        events.record("conversion.rejected", _conversion_data(conversion), partner_id=conversion.partner_id)
    if conversion.commissions:
        commissions.reverse_for_refund(conversion, note)
    if conversion.status == ConversionStatus.REJECTED:
        rewards.reverse_ladder_if_needed(get_program(), conversion, RejectionReason.REFUND, note)
    # In the sale's currency, as the shop sent it (check_ledger adds these up per sale).
    record_event(
        None,
        "conversion.refunded",
        "conversion",
        conversion.id,
        amount_minor=amount_minor,
        currency=sale_currency,
        refunded_minor=sale_refunded + amount_minor,
        refund_id=refund_id,
        note=note,
    )
    events.record(
        "conversion.refunded",
        {
            **_conversion_data(conversion),
            "amount_minor": conversion.refunded_minor - refunded_before,
            "refunded_minor": conversion.refunded_minor,
            "refund_id": refund_id,
            "original_amount_minor": amount_minor if foreign else None,
        },
        partner_id=conversion.partner_id,
    )
    db.session.flush()
    rollups.count_conversion(conversion, before)
    return RefundOutcome(conversion, refund)


def refund_conversion(
    conversion: Conversion,
    amount_minor: int | None,
    note: str | None,
    *,
    refund_id: str | None = None,
) -> Conversion:
    """``apply_refund`` for callers that need only the conversion afterwards (demo, jobs, tests)."""
    return apply_refund(conversion, amount_minor, note, refund_id=refund_id).conversion


def keep_refund_answer(refund: Refund, answer: dict) -> None:
    """Store the API's first answer to a refund, given again to a retry of its refund_id."""
    refund.response = answer
    db.session.flush()


def find_conversion(transaction_id: str) -> Conversion | None:
    return _find_conversion(transaction_id)


# --- operator review -----------------------------------------------------------


def approve_conversion(program: Program, conversion: Conversion, actor: User) -> Conversion:
    """Accept a conversion a fraud rule held for review; it earns from now on."""
    if conversion.status != ConversionStatus.REVIEW:
        raise DomainError(_("Only conversions waiting for review can be approved."))
    before = rollups.contribution(conversion)
    conversion.status = ConversionStatus.PENDING
    conversion.reviewed_at = utcnow()
    conversion.reviewed_by_id = actor.id
    if conversion.partner_id is not None and not conversion.commissions:
        commissions.earn(program, conversion)
        if conversion.refunded_minor:
            # Refunded in part while it waited: the lines are reckoned on the whole sale, so
            # the refunded share is reversed at once, as for a sale refunded after it earned.
            commissions.reverse_for_refund(conversion, None)
    record_event(actor, "conversion.approved", "conversion", conversion.id, flagged=conversion.flagged_reason)
    db.session.flush()
    rollups.count_conversion(conversion, before)
    events.record("conversion.approved", _conversion_data(conversion), partner_id=conversion.partner_id)
    return conversion


def reject_conversion(conversion: Conversion, actor: User, reason: str, note: str | None) -> Conversion:
    """Reject with a reason from the fixed list; any commission is reversed with the same reason."""
    if reason not in set(RejectionReason):
        raise DomainError(_("Choose a reason from the list."), "reason")
    if reason == RejectionReason.OTHER and not (note or "").strip():
        raise DomainError(_("Say what the other reason is."), "note")
    # As a refund does (apply_refund): wait for a settlement being built, whose payout decides
    # whether the reversing lines are reversals or clawbacks; then the conversion's own lock.
    db.session.execute(sa.select(Program.id).with_for_update(read=True))
    conversion = lock_conversion(conversion)
    if conversion.status == ConversionStatus.REJECTED:
        raise DomainError(_("This conversion is already rejected."))
    before = rollups.contribution(conversion)
    _reject(conversion, reason, (note or "").strip() or None)
    conversion.reviewed_at = utcnow()
    conversion.reviewed_by_id = actor.id
    commissions.reverse_all(conversion, reason, conversion.rejection_note)
    rewards.reverse_ladder_if_needed(get_program(), conversion, reason, conversion.rejection_note)
    record_event(actor, "conversion.rejected", "conversion", conversion.id, reason=reason, note=note)
    db.session.flush()
    rollups.count_conversion(conversion, before)
    events.record("conversion.rejected", _conversion_data(conversion), partner_id=conversion.partner_id)
    return conversion

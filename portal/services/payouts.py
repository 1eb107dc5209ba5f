"""Settlement: confirming commissions, building payout batches, paying them, clawing back.

Money rules that do not bend:
- a commission line is in at most one payout (``payout_lines`` is keyed by the line);
- a batch run twice, or twice at once, pays nobody twice (one scheduled batch per
  payout date, enforced by a unique index; runs are serialised on the program row);
- a partner whose confirmed balance is below the minimum (or negative) is not paid;
  the balance carries over.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from flask_babel import gettext as _
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from portal import realtime
from portal.errors import DomainError
from portal.extensions import db
from portal.models import (
    AuditEvent,
    BatchKind,
    BatchStatus,
    Commission,
    CommissionStatus,
    HoldReason,
    ItemStatus,
    Partner,
    PayoutAccount,
    PayoutBatch,
    PayoutItem,
    PayoutLine,
    Program,
    User,
)
from portal.models.types import utcnow
from portal.money import to_decimal_string
from portal.services import schedule
from portal.services.audit import record_event


def confirm_due_commissions(now: datetime) -> int:
    """Confirm every pending line whose hold period has ended. Idempotent."""
    due = sa.and_(Commission.status == CommissionStatus.PENDING, Commission.confirm_after <= now)
    partner_ids = db.session.scalars(sa.select(Commission.partner_id).where(due).distinct()).all()
    result = db.session.execute(
        sa.update(Commission)
        .where(Commission.status == CommissionStatus.PENDING, Commission.confirm_after <= now)
        .values(status=CommissionStatus.CONFIRMED, confirmed_at=now)
        .execution_options(synchronize_session=False)
    )
    db.session.expire_all()
    for partner_id in partner_ids:
        realtime.notify(partner_id, "earnings", {"confirmed": True})
    return result.rowcount or 0


def _lock_program(program: Program) -> None:
    """Serialise settlement runs: the second waits, then finds the first one's batch."""
    db.session.execute(sa.select(Program.id).where(Program.id == program.id).with_for_update())


def _lock_program_row() -> None:
    """The same lock without the program at hand (there is one program row)."""
    db.session.execute(sa.select(Program.id).with_for_update())


def _in_a_payout() -> sa.ColumnElement:
    return sa.exists().where(PayoutLine.commission_id == Commission.id)


def _unpaid_lines(
    cutoff: datetime | None = None, partner_id: int | None = None, currency: str | None = None
) -> sa.ColumnElement:
    conditions = [Commission.status == CommissionStatus.CONFIRMED, ~_in_a_payout()]
    if cutoff is not None:
        conditions.append(Commission.confirm_after < cutoff)
    if partner_id is not None:
        conditions.append(Commission.partner_id == partner_id)
    if currency is not None:
        conditions.append(Commission.currency == currency)
    return sa.and_(*conditions)


SQLITE_SETTLE_CACHE_KIB = 256 * 1024  # page cache while a batch is built (allocated as used)

# What the export pays to, per method: the payout details as they are when the batch is built.
_DESTINATION_FIELDS = {
    "paypal": ("paypal_email",),
    "bank": ("account_holder", "iban", "bic", "bank_name"),
    "other": ("other_instructions",),
}


def _destination_sql() -> sa.ColumnElement:
    """The item's ``destination`` JSON object, built by the database from the partner's account."""
    postgresql = db.session.get_bind().dialect.name == "postgresql"
    json_object = sa.func.json_build_object if postgresql else sa.func.json_object
    whens = [
        (
            PayoutAccount.method == method,
            json_object(*[part for name in fields for part in (name, getattr(PayoutAccount, name))]),
        )
        for method, fields in _DESTINATION_FIELDS.items()
    ]
    return sa.case(*whens, else_=json_object())


def _fill_batch(
    batch: PayoutBatch, minimum: int, cutoff: datetime | None, partner_id: int | None = None
) -> int:
    """Put every partner's unpaid balance at or above ``minimum`` into ``batch``; returns the item count.

    Set-based whatever the size: one INSERT ... SELECT ... GROUP BY partner makes the items
    (held back, without a destination, for partners with no payout details), one
    INSERT ... SELECT joins each payable item's lines to it. payout_lines is keyed by the
    line, so the database never lets a line into two payouts.

    The items and the lines come from the same set of unpaid lines: on PostgreSQL the two
    inserts are one statement (the items in a data-modifying WITH), so one snapshot; on
    SQLite the write transaction excludes every other writer. The caller also holds the
    program lock, which every writer of payout_lines takes. (A check that joined the 1M
    lines back to their items afterwards cost more than building the batch.)
    """
    unpaid = _unpaid_lines(cutoff, partner_id, batch.currency)
    total = sa.func.sum(Commission.amount_minor)
    balances = (
        sa.select(Commission.partner_id.label("partner_id"), total.label("total"))
        .where(unpaid)
        .group_by(Commission.partner_id)
        .having(total >= max(minimum, 1))
        .subquery("balances")
    )
    make_items = sa.insert(PayoutItem).from_select(
        [
            "batch_id",
            "partner_id",
            "amount_minor",
            "currency",
            "status",
            "hold_reason",
            "method",
            "destination",
        ],
        sa.select(
            sa.literal(batch.id, sa.Integer),
            balances.c.partner_id,
            balances.c.total,
            sa.literal(batch.currency, sa.String),
            sa.case(
                (PayoutAccount.id.is_(None), sa.literal(ItemStatus.HELD.value, sa.String)),
                else_=sa.literal(ItemStatus.PENDING.value, sa.String),
            ),
            sa.case(
                (PayoutAccount.id.is_(None), sa.literal(HoldReason.NO_DETAILS.value, sa.String)),
                else_=sa.null(),
            ),
            PayoutAccount.method,
            _destination_sql(),
        )
        .select_from(balances)
        .outerjoin(PayoutAccount, PayoutAccount.partner_id == balances.c.partner_id)
        .order_by(balances.c.partner_id),
    )

    def lines_of(items):
        return sa.select(Commission.id, items.c.id).join(
            items,
            sa.and_(items.c.partner_id == Commission.partner_id, items.c.status == ItemStatus.PENDING),
        )

    if db.session.get_bind().dialect.name == "postgresql":
        # One statement, one snapshot: the items and their lines are the same set of lines
        # even if a line is confirmed or returned by another transaction meanwhile.
        made_items = make_items.returning(PayoutItem.id, PayoutItem.partner_id, PayoutItem.status).cte(
            "made_items"
        )
        db.session.execute(
            sa.insert(PayoutLine)
            .add_cte(made_items, nest_here=True)
            .from_select(["commission_id", "payout_item_id"], lines_of(made_items).where(unpaid))
        )
        made = db.session.scalar(
            sa.select(sa.func.count()).select_from(PayoutItem).where(PayoutItem.batch_id == batch.id)
        )
    else:
        # SQLite: the caller's write transaction has the database to itself until it commits.
        # A batch touches every unpaid line once; a page cache that holds them saves re-reading
        # pages from the file (SQLite's default is 2 MiB). Only for this transaction's work.
        connection = db.session.connection()
        cache_pages = connection.exec_driver_sql("PRAGMA cache_size").scalar()
        connection.exec_driver_sql(f"PRAGMA cache_size = {-SQLITE_SETTLE_CACHE_KIB}")
        try:
            made = db.session.execute(make_items).rowcount
            if made:
                items = sa.select(PayoutItem.id, PayoutItem.partner_id, PayoutItem.status).where(
                    PayoutItem.batch_id == batch.id
                )
                db.session.execute(
                    sa.insert(PayoutLine).from_select(
                        ["commission_id", "payout_item_id"], lines_of(items.subquery("items")).where(unpaid)
                    )
                )
        finally:
            connection.exec_driver_sql(f"PRAGMA cache_size = {int(cache_pages)}")
    db.session.expire(batch, ["items"])
    return made


def _item_partners(batch: PayoutBatch) -> list[int]:
    return list(db.session.scalars(sa.select(PayoutItem.partner_id).where(PayoutItem.batch_id == batch.id)))


def settle(
    program: Program, as_of: date | None = None, now: datetime | None = None, actor: User | None = None
):
    """Build the scheduled batch for the payout date on or before ``as_of`` (program zone).

    Returns ``(batch, created)``; the batch is None when nobody reaches the minimum.
    """
    now = now or utcnow()
    as_of = as_of or schedule.local_today(program, now)
    _lock_program(program)
    confirm_due_commissions(now)
    payout_date = schedule.last_payout_date(program.payout_schedule, program.payout_day, as_of)
    existing = scheduled_batch_for(payout_date)
    if existing is not None:
        return existing, False
    cutoff = schedule.start_of_day_utc(program, payout_date)
    batch = PayoutBatch(
        kind=BatchKind.SCHEDULED,
        currency=program.currency,
        period_start=schedule.previous_payout_date(program.payout_schedule, program.payout_day, payout_date),
        period_end=payout_date,
        cutoff_at=cutoff,
        created_by_id=actor.id if actor else None,
    )
    try:
        with db.session.begin_nested():
            db.session.add(batch)
            db.session.flush()
    except IntegrityError:
        # Another run built it between our check and our insert (the unique index held).
        return scheduled_batch_for(payout_date), False
    items = _fill_batch(batch, program.minimum_payout_minor, cutoff)
    if not items:
        # Nobody reached the minimum: no batch; the next run for this date looks again.
        db.session.delete(batch)
        db.session.flush()
        return None, False
    record_event(
        actor, "payout.batch_built", "payout_batch", batch.id, period_end=str(payout_date), items=items
    )
    realtime.notify_operators("payout", {"batch": batch.id})
    realtime.notify_partners(_item_partners(batch), "earnings", {"batch": batch.id})
    return batch, True


def scheduled_batch_for(payout_date: date) -> PayoutBatch | None:
    return db.session.scalars(
        sa.select(PayoutBatch).where(
            PayoutBatch.kind == BatchKind.SCHEDULED, PayoutBatch.period_end == payout_date
        )
    ).first()


def request_withdrawal(program: Program, partner: Partner, now: datetime | None = None) -> PayoutBatch:
    """Pay a partner's confirmed balance now, as a one-item batch for the operators to approve."""
    now = now or utcnow()
    if not program.allow_withdrawals:
        raise DomainError(_("This program pays on its schedule only."))
    _lock_program(program)
    balance = confirmed_balance(partner.id)
    if balance < program.minimum_payout_minor or balance <= 0:
        raise DomainError(_("Your confirmed balance has not reached the minimum payout yet."))
    if account_of(partner) is None:
        raise DomainError(_("Add your payout details first."))
    batch = PayoutBatch(
        kind=BatchKind.WITHDRAWAL,
        currency=program.currency,
        period_end=schedule.local_today(program, now),
        cutoff_at=now,
        created_by_id=partner.user_id,
    )
    db.session.add(batch)
    db.session.flush()
    _fill_batch(batch, balance, None, partner.id)
    record_event(partner.user, "payout.withdrawal_requested", "payout_batch", batch.id, amount_minor=balance)
    realtime.notify_operators("payout", {"batch": batch.id})
    return batch


# --- operator flow --------------------------------------------------------------------


def approve_batch(batch: PayoutBatch, actor: User) -> PayoutBatch:
    if batch.status != BatchStatus.REVIEW:
        raise DomainError(_("Only a batch waiting for review can be approved."))
    batch.status = BatchStatus.APPROVED
    batch.approved_at = utcnow()
    batch.approved_by_id = actor.id
    record_event(actor, "payout.batch_approved", "payout_batch", batch.id, total_minor=batch_total(batch))
    db.session.flush()
    return batch


def _item_in_approved_batch(item: PayoutItem) -> None:
    if item.batch.status != BatchStatus.APPROVED:
        raise DomainError(_("Approve the batch before recording payments."))


def _check_payment(batch: PayoutBatch, reference: str, paid_on: date) -> str:
    reference = (reference or "").strip()
    if not reference:
        raise DomainError(_("Enter the payment reference."), "reference")
    # A day of slack either side: the operator's calendar day may not be UTC's.
    if (
        paid_on > (utcnow() + timedelta(days=1)).date()
        or paid_on < (batch.created_at - timedelta(days=1)).date()
    ):
        raise DomainError(_("The payment date must be between the batch date and today."), "paid_on")
    return reference[:128]


def mark_item_paid(item: PayoutItem, actor: User, reference: str, paid_on: date) -> PayoutItem:
    if item.status == ItemStatus.PAID:
        raise DomainError(_("This payment is already recorded as paid."))
    if item.status != ItemStatus.PENDING:
        raise DomainError(_("Only a payment waiting to be made can be marked paid."))
    _item_in_approved_batch(item)
    item.reference = _check_payment(item.batch, reference, paid_on)
    item.status = ItemStatus.PAID
    item.paid_on = paid_on
    record_event(
        actor,
        "payout.item_paid",
        "payout_item",
        item.id,
        amount_minor=item.amount_minor,
        reference=item.reference,
    )
    db.session.flush()
    _close_if_done(item.batch)
    realtime.notify(item.partner_id, "earnings", {"item": item.id, "status": "paid"})
    return item


def mark_item_failed(item: PayoutItem, actor: User, reason: str) -> PayoutItem:
    """A payment that bounced: its lines go back to the partner's balance for the next batch."""
    if item.status == ItemStatus.PAID:
        raise DomainError(_("A paid item cannot be marked failed; record a correction instead."))
    if item.status != ItemStatus.PENDING:
        raise DomainError(_("Only a payment waiting to be made can be marked failed."))
    _item_in_approved_batch(item)
    reason = (reason or "").strip()
    if not reason:
        raise DomainError(_("Say why the payment failed."), "reason")
    # Serialised with settlement: a batch being built never sees these lines half returned.
    _lock_program_row()
    returned = db.session.execute(
        sa.delete(PayoutLine)
        .where(PayoutLine.payout_item_id == item.id)
        .execution_options(synchronize_session=False)
    ).rowcount
    item.status = ItemStatus.FAILED
    item.failure_reason = reason[:1000]
    record_event(
        actor,
        "payout.item_failed",
        "payout_item",
        item.id,
        amount_minor=item.amount_minor,
        reason=reason,
        lines=returned,
    )
    db.session.flush()
    _close_if_done(item.batch)
    db.session.expire_all()
    realtime.notify(item.partner_id, "earnings", {"item": item.id, "status": "failed"})
    return item


def mark_batch_paid(batch: PayoutBatch, actor: User, reference: str, paid_on: date) -> int:
    """Record one reference for every item still waiting (a bulk transfer).

    Set-based: one UPDATE of the waiting items, one multi-row insert of their audit
    entries (one per item, as for a single payment), one live event to their partners.
    """
    waiting = db.session.execute(
        sa.select(PayoutItem.id, PayoutItem.partner_id, PayoutItem.amount_minor)
        .where(PayoutItem.batch_id == batch.id, PayoutItem.status == ItemStatus.PENDING)
        .order_by(PayoutItem.id)
    ).all()
    if not waiting:
        raise DomainError(_("Every payment in this batch is already recorded."))
    if batch.status != BatchStatus.APPROVED:
        raise DomainError(_("Approve the batch before recording payments."))
    reference = _check_payment(batch, reference, paid_on)
    paid = db.session.execute(
        sa.update(PayoutItem)
        .where(PayoutItem.batch_id == batch.id, PayoutItem.status == ItemStatus.PENDING)
        .values(status=ItemStatus.PAID, reference=reference, paid_on=paid_on, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    if paid != len(waiting):
        raise RuntimeError("the batch changed while it was being marked paid; nothing recorded")
    actor_id = actor.id if actor else None
    db.session.execute(
        sa.insert(AuditEvent),
        [
            {
                "actor_id": actor_id,
                "action": "payout.item_paid",
                "subject_type": "payout_item",
                "subject_id": item_id,
                "data": {"amount_minor": amount, "reference": reference, "bulk": True},
            }
            for item_id, _partner, amount in waiting
        ],
    )
    db.session.expire_all()  # the items loaded before the bulk UPDATE are stale
    _close_if_done(batch)
    realtime.notify_partners([partner for _i, partner, _a in waiting], "earnings", {"status": "paid"})
    return len(waiting)


def _close_if_done(batch: PayoutBatch) -> None:
    """Close the batch once no payment in it is still waiting (one query, not a walk of its items)."""
    waiting = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(PayoutItem)
        .where(PayoutItem.batch_id == batch.id, PayoutItem.status == ItemStatus.PENDING)
    )
    if not waiting:
        batch.status = BatchStatus.CLOSED
        batch.closed_at = utcnow()
        db.session.flush()


@dataclass
class BatchSummary:
    """A batch's figures over all its items, counted the same way on every page."""

    to_pay: int  # items paid or waiting to be paid
    to_pay_minor: int
    held: int  # items held back: the partner has no payout details
    held_minor: int
    paid: int
    failed: int


def batch_summaries(batch_ids: list[int]) -> dict[int, BatchSummary]:
    """One grouped query for every batch in ``batch_ids`` (a page of them, or one)."""
    summaries = {batch_id: BatchSummary(0, 0, 0, 0, 0, 0) for batch_id in batch_ids}
    if not batch_ids:
        return summaries
    rows = db.session.execute(
        sa.select(
            PayoutItem.batch_id, PayoutItem.status, sa.func.count(), sa.func.sum(PayoutItem.amount_minor)
        )
        .where(PayoutItem.batch_id.in_(batch_ids))
        .group_by(PayoutItem.batch_id, PayoutItem.status)
    )
    for batch_id, status, count, amount in rows:
        summary = summaries[batch_id]
        if status in (ItemStatus.PENDING, ItemStatus.PAID):
            summary.to_pay += count
            summary.to_pay_minor += int(amount)
        elif status == ItemStatus.HELD:
            summary.held += count
            summary.held_minor += int(amount)
        if status == ItemStatus.PAID:
            summary.paid += count
        elif status == ItemStatus.FAILED:
            summary.failed += count
    return summaries


def batch_items_query(batch: PayoutBatch) -> sa.Select:
    """A batch's items with their partners, in a stable order (the batch page pages them)."""
    return (
        sa.select(PayoutItem)
        .where(PayoutItem.batch_id == batch.id)
        .options(selectinload(PayoutItem.partner).selectinload(Partner.user))
        .order_by(PayoutItem.id)
    )


def batch_summary(batch: PayoutBatch) -> BatchSummary:
    return batch_summaries([batch.id])[batch.id]


def batch_total(batch: PayoutBatch, statuses=(ItemStatus.PENDING, ItemStatus.PAID)) -> int:
    return int(
        db.session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(PayoutItem.amount_minor), 0)).where(
                PayoutItem.batch_id == batch.id, PayoutItem.status.in_([str(s) for s in statuses])
            )
        )
    )


# --- exports ------------------------------------------------------------------------


def export_csv(batch: PayoutBatch) -> str:
    """Generic payment file: one row per payable item."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["item_id", "partner_ref", "partner_name", "method", "destination", "amount", "currency", "note"]
    )
    for item, ref_code, name in _payable(batch):
        writer.writerow(
            [
                item.id,
                ref_code,
                name,
                item.method,
                "; ".join(f"{k}={v}" for k, v in item.destination.items() if v),
                to_decimal_string(item.amount_minor, item.currency),
                item.currency,
                f"Partner payout {batch.period_end.isoformat()}",
            ]
        )
    return out.getvalue()


def export_paypal(batch: PayoutBatch) -> str:
    """PayPal Payouts bulk file (CSV, no header): e-mail, amount, currency, unique id, note."""
    out = io.StringIO()
    writer = csv.writer(out)
    for item, _ref_code, _name in _payable(batch):
        if item.method != "paypal":
            continue
        writer.writerow(
            [
                item.destination["paypal_email"],
                to_decimal_string(item.amount_minor, item.currency),
                item.currency,
                f"payout-{item.id}",
                f"Partner payout {batch.period_end.isoformat()}",
            ]
        )
    return out.getvalue()


def _payable(batch: PayoutBatch) -> list[tuple[PayoutItem, str, str]]:
    """The items waiting to be paid with their partner's ref code and name, in one query."""
    if batch.status == BatchStatus.REVIEW:
        raise DomainError(_("Approve the batch before exporting its payment file."))
    return [
        tuple(row)
        for row in db.session.execute(
            sa.select(PayoutItem, Partner.ref_code, User.name)
            .join(Partner, Partner.id == PayoutItem.partner_id)
            .join(User, User.id == Partner.user_id)
            .where(PayoutItem.batch_id == batch.id, PayoutItem.status == ItemStatus.PENDING)
            .order_by(PayoutItem.id)
        )
    ]


# --- balances for the partner --------------------------------------------------------


def confirmed_balance(partner_id: int) -> int:
    return int(
        db.session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(Commission.amount_minor), 0)).where(
                _unpaid_lines(None, partner_id)
            )
        )
    )


@dataclass
class Earnings:
    pending: int
    confirmed: int
    in_payout: int
    paid: int


def earnings_of(partner_id: int) -> Earnings:
    """The four figures: pending, confirmed (unpaid), in a payout not yet paid, paid to date.

    Read without going through the partner's whole ledger (the dashboard shows them on
    every refresh): pending and unpaid lines through their indexes, and what is in a
    payout from the payout items, which always equal the lines in them (both are written by
    the same INSERT … SELECT in ``_fill_batch``, and a line never leaves an item except when
    the item fails, which takes the item out of these figures).
    """
    amount = sa.func.coalesce(sa.func.sum(Commission.amount_minor), 0)
    pending = db.session.scalar(
        sa.select(amount).where(
            Commission.partner_id == partner_id, Commission.status == CommissionStatus.PENDING
        )
    )
    rows = db.session.execute(
        sa.select(PayoutItem.status, sa.func.coalesce(sa.func.sum(PayoutItem.amount_minor), 0))
        .where(
            PayoutItem.partner_id == partner_id,
            PayoutItem.status.in_([ItemStatus.PENDING, ItemStatus.PAID]),
        )
        .group_by(PayoutItem.status)
    )
    by_status = {status: int(total) for status, total in rows}
    return Earnings(
        pending=int(pending),
        confirmed=confirmed_balance(partner_id),
        in_payout=by_status.get(ItemStatus.PENDING, 0),
        paid=by_status.get(ItemStatus.PAID, 0),
    )


def ledger_of(partner_id: int) -> list[Commission]:
    from sqlalchemy.orm import joinedload

    return list(
        db.session.scalars(
            sa.select(Commission)
            .where(Commission.partner_id == partner_id)
            .options(
                joinedload(Commission.conversion),
                joinedload(Commission.payout_item).joinedload(PayoutItem.batch),
            )
            .order_by(Commission.created_at.desc(), Commission.id.desc())
        )
    )


def _order_of(line: Commission) -> str:
    """The order a line belongs to, or the month of a ladder bonus (and of its reversals)."""
    if line.conversion is not None:
        return line.conversion.transaction_id
    period = line.period or (line.reverses.period if line.reverses is not None else None)
    return f"ladder {period}" if period else ""


def ledger_csv(partner_id: int) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["line_id", "earned_at", "order", "kind", "amount", "currency", "status", "confirms_on", "reason",
         "payout_date", "paid_on", "reference"]
    )  # fmt: skip
    for line in ledger_of(partner_id):
        item = line.payout_item
        writer.writerow(
            [
                line.id,
                line.created_at.isoformat(),
                _order_of(line),
                line.kind,
                to_decimal_string(line.amount_minor, line.currency),
                line.currency,
                ledger_state(line),
                line.confirm_after.date().isoformat(),
                line.reason_code or "",
                item.batch.period_end.isoformat() if item else "",
                item.paid_on.isoformat() if item and item.paid_on else "",
                item.reference if item and item.status == ItemStatus.PAID else "",
            ]
        )
    return out.getvalue()


def ledger_state(line: Commission) -> str:
    """pending → confirmed → in payout → paid, as one word."""
    item = line.payout_item
    if item is not None and item.status == ItemStatus.PAID:
        return "paid"
    if item is not None and item.status == ItemStatus.PENDING:
        return "in_payout"
    return line.status


# --- payout details --------------------------------------------------------------------


def account_of(partner: Partner) -> PayoutAccount | None:
    return db.session.scalars(sa.select(PayoutAccount).where(PayoutAccount.partner_id == partner.id)).first()


_BIC = re.compile(r"^[A-Z]{4}[A-Z]{2}[A-Z0-9]{2}([A-Z0-9]{3})?$")


def iban_is_valid(iban: str) -> bool:
    """ISO 13616: country, check digits, then the mod-97 test."""
    text = iban.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", text):
        return False
    rearranged = text[4:] + text[:4]
    digits = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(digits) % 97 == 1


@dataclass
class PayoutDetails:
    method: str
    paypal_email: str | None = None
    account_holder: str | None = None
    iban: str | None = None
    bic: str | None = None
    bank_name: str | None = None
    other_instructions: str | None = None
    tax_id: str | None = None
    tax_country: str | None = None


def save_payout_account(partner: Partner, details: PayoutDetails, actor: User) -> PayoutAccount:
    """Check and store where the partner is paid; the change is audited and announced."""
    from email_validator import EmailNotValidError, validate_email

    clean = {k: (v.strip() if isinstance(v, str) else v) or None for k, v in vars(details).items()}
    method = clean["method"]
    if method == "paypal":
        try:
            clean["paypal_email"] = validate_email(
                clean["paypal_email"] or "", check_deliverability=False
            ).normalized
        except EmailNotValidError:
            raise DomainError(_("Enter the e-mail address of your PayPal account."), "paypal_email") from None
    elif method == "bank":
        if not clean["account_holder"]:
            raise DomainError(_("Enter the account holder's name."), "account_holder")
        if not iban_is_valid(clean["iban"] or ""):
            raise DomainError(_("This IBAN is not valid; check it against your bank statement."), "iban")
        clean["iban"] = clean["iban"].replace(" ", "").upper()
        if clean["bic"]:
            clean["bic"] = clean["bic"].replace(" ", "").upper()
            if not _BIC.match(clean["bic"]):
                raise DomainError(_("A BIC has 8 or 11 letters and digits."), "bic")
    elif method == "other":
        if not clean["other_instructions"]:
            raise DomainError(_("Tell us how you want to be paid."), "other_instructions")
    else:
        raise DomainError(_("Choose how you want to be paid."), "method")
    keep = {
        "paypal": {"paypal_email"},
        "bank": {"account_holder", "iban", "bic", "bank_name"},
        "other": {"other_instructions"},
    }
    account = account_of(partner) or PayoutAccount(partner_id=partner.id)
    before = {k: getattr(account, k) for k in clean} if account.id else {}
    for name, value in clean.items():
        if name in {"method", "tax_id", "tax_country"} or name in keep[method]:
            setattr(account, name, value)
        else:
            setattr(account, name, None)
    db.session.add(account)
    db.session.flush()
    after = {k: getattr(account, k) for k in clean}
    changed = sorted(k for k in after if before.get(k) != after[k])
    # Which fields changed, never their values: the audit log is not a place for bank details.
    record_event(actor, "payout.details_changed", "partner", partner.id, fields=changed, method=method)
    realtime.notify(partner.id, "payout_details", {"fields": changed})
    realtime.notify_operators("payout_details", {"partner": partner.id})
    return account

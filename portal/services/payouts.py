"""Settlement: confirming commissions, building payout batches, paying them, clawing back.

Money rules that do not bend:
- a commission line is in at most one payout (one column, ``payout_item_id``);
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

from portal import realtime
from portal.errors import DomainError
from portal.extensions import db
from portal.models import (
    BatchKind,
    BatchStatus,
    Commission,
    CommissionStatus,
    ItemStatus,
    Partner,
    PayoutAccount,
    PayoutBatch,
    PayoutItem,
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


def _unpaid_lines(cutoff: datetime | None = None, partner_id: int | None = None) -> sa.ColumnElement:
    conditions = [Commission.status == CommissionStatus.CONFIRMED, Commission.payout_item_id.is_(None)]
    if cutoff is not None:
        conditions.append(Commission.confirm_after < cutoff)
    if partner_id is not None:
        conditions.append(Commission.partner_id == partner_id)
    return sa.and_(*conditions)


def _destination(account: PayoutAccount | None) -> tuple[str | None, dict]:
    if account is None:
        return None, {}
    fields = {
        "paypal": ("paypal_email",),
        "bank": ("account_holder", "iban", "bic", "bank_name"),
        "other": ("other_instructions",),
    }[account.method]
    return account.method, {name: getattr(account, name) for name in fields}


def _fill_batch(batch: PayoutBatch, balances: list[tuple[int, int]], cutoff: datetime | None) -> None:
    accounts = {
        a.partner_id: a
        for a in db.session.scalars(
            sa.select(PayoutAccount).where(PayoutAccount.partner_id.in_([p for p, _ in balances]))
        )
    }
    payable: list[int] = []
    for partner_id, amount in balances:
        method, destination = _destination(accounts.get(partner_id))
        item = PayoutItem(
            batch=batch,
            partner_id=partner_id,
            amount_minor=amount,
            currency=batch.currency,
            status=ItemStatus.PENDING if method else ItemStatus.HELD,
            method=method,
            destination=destination,
        )
        db.session.add(item)
        if method:
            payable.append(partner_id)
    db.session.flush()
    if not payable:
        return
    # One statement assigns every line to its partner's item; a line already taken
    # (payout_item_id set) is never moved.
    item_for_partner = (
        sa.select(PayoutItem.id)
        .where(PayoutItem.batch_id == batch.id, PayoutItem.partner_id == Commission.partner_id)
        .scalar_subquery()
    )
    db.session.execute(
        sa.update(Commission)
        .where(_unpaid_lines(cutoff), Commission.partner_id.in_(payable))
        .values(payout_item_id=item_for_partner)
        .execution_options(synchronize_session=False)
    )
    # The lines now in each item must add up to it exactly, or nothing happens.
    mismatched = db.session.execute(
        sa.select(PayoutItem.id)
        .outerjoin(Commission, Commission.payout_item_id == PayoutItem.id)
        .where(PayoutItem.batch_id == batch.id, PayoutItem.status == ItemStatus.PENDING)
        .group_by(PayoutItem.id, PayoutItem.amount_minor)
        .having(sa.func.coalesce(sa.func.sum(Commission.amount_minor), 0) != PayoutItem.amount_minor)
    ).first()
    if mismatched is not None:
        raise RuntimeError(f"payout item {mismatched[0]} does not match its lines; batch not built")
    db.session.expire_all()


def _balances(
    program: Program, cutoff: datetime | None, partner_id: int | None = None
) -> list[tuple[int, int]]:
    total = sa.func.sum(Commission.amount_minor)
    query = (
        sa.select(Commission.partner_id, total)
        .where(_unpaid_lines(cutoff, partner_id), Commission.currency == program.currency)
        .group_by(Commission.partner_id)
        .having(total >= max(program.minimum_payout_minor, 1))
        .order_by(Commission.partner_id)
    )
    return [(p, int(amount)) for p, amount in db.session.execute(query)]


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
    balances = _balances(program, cutoff)
    if not balances:
        return None, False
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
    _fill_batch(batch, balances, cutoff)
    record_event(
        actor,
        "payout.batch_built",
        "payout_batch",
        batch.id,
        period_end=str(payout_date),
        items=len(balances),
    )
    realtime.notify_operators("payout", {"batch": batch.id})
    for partner_id, _amount in balances:
        realtime.notify(partner_id, "earnings", {"batch": batch.id})
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
    _fill_batch(batch, [(partner.id, balance)], None)
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


def mark_item_paid(item: PayoutItem, actor: User, reference: str, paid_on: date) -> PayoutItem:
    if item.status == ItemStatus.PAID:
        raise DomainError(_("This payment is already recorded as paid."))
    if item.status != ItemStatus.PENDING:
        raise DomainError(_("Only a payment waiting to be made can be marked paid."))
    _item_in_approved_batch(item)
    reference = (reference or "").strip()
    if not reference:
        raise DomainError(_("Enter the payment reference."), "reference")
    # A day of slack either side: the operator's calendar day may not be UTC's.
    if (
        paid_on > (utcnow() + timedelta(days=1)).date()
        or paid_on < (item.batch.created_at - timedelta(days=1)).date()
    ):
        raise DomainError(_("The payment date must be between the batch date and today."), "paid_on")
    item.status = ItemStatus.PAID
    item.reference = reference[:128]
    item.paid_on = paid_on
    record_event(
        actor,
        "payout.item_paid",
        "payout_item",
        item.id,
        amount_minor=item.amount_minor,
        reference=item.reference,
    )
    _close_if_done(item.batch)
    db.session.flush()
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
    returned = db.session.execute(
        sa.update(Commission)
        .where(Commission.payout_item_id == item.id)
        .values(payout_item_id=None)
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
    _close_if_done(item.batch)
    db.session.flush()
    db.session.expire_all()
    realtime.notify(item.partner_id, "earnings", {"item": item.id, "status": "failed"})
    return item


def mark_batch_paid(batch: PayoutBatch, actor: User, reference: str, paid_on: date) -> int:
    """Record one reference for every item still waiting (a bulk transfer)."""
    waiting = [item for item in batch.items if item.status == ItemStatus.PENDING]
    if not waiting:
        raise DomainError(_("Every payment in this batch is already recorded."))
    if batch.status != BatchStatus.APPROVED:
        raise DomainError(_("Approve the batch before recording payments."))
    for item in waiting:
        mark_item_paid(item, actor, reference, paid_on)
    return len(waiting)


def _close_if_done(batch: PayoutBatch) -> None:
    if all(item.status in (ItemStatus.PAID, ItemStatus.FAILED, ItemStatus.HELD) for item in batch.items):
        batch.status = BatchStatus.CLOSED
        batch.closed_at = utcnow()


def batch_total(batch: PayoutBatch, statuses=(ItemStatus.PENDING, ItemStatus.PAID)) -> int:
    return sum(item.amount_minor for item in batch.items if item.status in statuses)


# --- exports ------------------------------------------------------------------------


def export_csv(batch: PayoutBatch) -> str:
    """Generic payment file: one row per payable item."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["item_id", "partner_ref", "partner_name", "method", "destination", "amount", "currency", "note"]
    )
    for item in _payable(batch):
        writer.writerow(
            [
                item.id,
                item.partner.ref_code,
                item.partner.user.name,
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
    for item in _payable(batch):
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


def _payable(batch: PayoutBatch) -> list[PayoutItem]:
    if batch.status == BatchStatus.REVIEW:
        raise DomainError(_("Approve the batch before exporting its payment file."))
    return [item for item in batch.items if item.status == ItemStatus.PENDING]


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
    """The four figures: pending, confirmed (unpaid), in a payout not yet paid, paid to date."""
    amount = sa.func.coalesce(sa.func.sum(Commission.amount_minor), 0)
    pending = db.session.scalar(
        sa.select(amount).where(
            Commission.partner_id == partner_id, Commission.status == CommissionStatus.PENDING
        )
    )
    rows = db.session.execute(
        sa.select(PayoutItem.status, amount)
        .select_from(Commission)
        .join(PayoutItem, PayoutItem.id == Commission.payout_item_id)
        .where(Commission.partner_id == partner_id)
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

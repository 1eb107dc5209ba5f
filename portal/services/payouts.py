"""Settlement: confirming commissions, building payout batches, paying them, clawing back.

Money rules that do not bend:
- a commission line is in at most one payout (``payout_lines`` is keyed by the line);
- a batch run twice, or twice at once, pays nobody twice (one scheduled batch per
  payout date, enforced by a unique index; runs are serialised on the program row);
- a partner whose confirmed balance is below the minimum (or negative) is not paid;
  the balance carries over.

Why it is long: settlement, suspension holds, the operators' batch flow, partner
balances and payout details all move one PayoutBatch / PayoutItem state machine
under the same locks (the program row, then the batch), and the rules above hold
only if they are read together. The exports and the payout-details section take
no locks and are the first to move out when this grows.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from flask_babel import gettext as _
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from portal import csvfile, realtime
from portal.errors import DomainError
from portal.extensions import db
from portal.models import (
    CORRECTION_KINDS,
    AuditEvent,
    BatchKind,
    BatchStatus,
    Commission,
    CommissionKind,
    CommissionStatus,
    HoldReason,
    ItemStatus,
    Partner,
    PartnerBalance,
    PartnerStatus,
    PayoutAccount,
    PayoutBatch,
    PayoutItem,
    PayoutLine,
    Program,
    User,
)
from portal.models.types import utcnow
from portal.money import to_decimal_string
from portal.services import delivery, events, schedule
from portal.services.audit import record_event
from portal.services.identity import confirm_identity
from portal.services.ledger import balance_recount

# A batch built within this long of a change of a partner's payout destination holds their
# item for an operator to check (a stolen session must not redirect the next payout).
DETAILS_CHANGE_HOLD = timedelta(hours=48)
# The audit action of such a change (not of a first setup: nothing is redirected then).
DESTINATION_CHANGED = "payout.destination_changed"


def confirm_due_commissions(now: datetime) -> int:
    """Confirm every pending line whose hold period has ended. Idempotent."""
    due = sa.and_(Commission.status == CommissionStatus.PENDING, Commission.confirm_after <= now)
    per_partner = db.session.execute(
        sa.select(
            Commission.partner_id, Commission.currency, sa.func.count(), sa.func.sum(Commission.amount_minor)
        )
        .where(due)
        .group_by(Commission.partner_id, Commission.currency)
        .order_by(Commission.partner_id)
    ).all()
    partner_ids = list(dict.fromkeys(row[0] for row in per_partner))
    result = db.session.execute(
        sa.update(Commission)
        .where(Commission.status == CommissionStatus.PENDING, Commission.confirm_after <= now)
        .values(status=CommissionStatus.CONFIRMED, confirmed_at=now)
        .execution_options(synchronize_session=False)
    )
    events.record_many(
        [
            (
                "commission.confirmed",
                {"partner_id": partner_id, "count": count, "amount_minor": int(total), "currency": currency},
                partner_id,
            )
            for partner_id, currency, count, total in per_partner
        ]
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


def _in_period(cutoff: datetime) -> sa.ColumnElement[bool]:
    """A line confirmed before the cut-off, or a confirmed correction (reversal, clawback)
    whenever it was confirmed.

    A correction is confirmed when it is written, which may be after the cut-off but before
    the batch is built (a refund on the payout day, a late cron run). Left to a later batch,
    the batch would pay a refunded sale's commission in full and leave the partner owing it
    back. A correction only ever lowers what is paid, so netting it early never overpays.
    (Read from the line itself: a look-up of the line it corrects would read the lines a
    second time, which settlement's one-scan plan must not, see tests/unit/test_settle_plan.py.)
    """
    return sa.or_(Commission.confirm_after < cutoff, Commission.kind.in_(sorted(CORRECTION_KINDS)))


def _unpaid_lines(
    cutoff: datetime | None = None, partner_id: int | None = None, currency: str | None = None
) -> sa.ColumnElement:
    conditions = [Commission.status == CommissionStatus.CONFIRMED, ~_in_a_payout()]
    if cutoff is not None:
        conditions.append(_in_period(cutoff))
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
    (held back for partners who are suspended, have no payout details or replaced them
    shortly before, with the reason in ``hold_reason``), one INSERT ... SELECT joins each
    payable item's lines to it. A held item has no lines: they stay in the partner's
    confirmed balance. payout_lines is keyed by the line, so the database never lets a line
    into two payouts.

    The items and the lines come from the same set of unpaid lines: on PostgreSQL the two
    inserts are one statement (the items in a data-modifying WITH), so one snapshot; on
    SQLite the write transaction excludes every other writer. The caller also holds the
    program lock, which every writer of payout_lines takes. (A check that joined the 1M
    lines back to their items afterwards cost more than building the batch.)
    """
    unpaid = _unpaid_lines(cutoff, partner_id, batch.currency)
    postgresql = db.session.get_bind().dialect.name == "postgresql"
    if postgresql:
        # The unpaid lines are read once, into a materialised CTE that both the items (their
        # sums) and the lines' rows come from: one scan and one anti-join of the lines, whose
        # row estimate the planner knows, so it hashes the items and the lines (a nested loop
        # per item — the plan chosen when the items' estimate was one row — read every line
        # again through the heap and probed payout_lines once per line). The lines come out
        # in table order, so payout_lines' key grows at its right edge as they go in.
        lines = (
            sa.select(
                Commission.id.label("id"),
                Commission.partner_id.label("partner_id"),
                Commission.amount_minor.label("amount_minor"),
            )
            .where(unpaid)
            .cte("unpaid_lines")
            .prefix_with("MATERIALIZED")
        )
        total = sa.func.sum(lines.c.amount_minor)
        balances = (
            sa.select(lines.c.partner_id.label("partner_id"), total.label("total"))
            .group_by(lines.c.partner_id)
            .having(total >= max(minimum, 1))
            .subquery("balances")
        )
    else:
        total = sa.func.sum(Commission.amount_minor)
        balances = (
            sa.select(Commission.partner_id.label("partner_id"), total.label("total"))
            .where(unpaid)
            .group_by(Commission.partner_id)
            .having(total >= max(minimum, 1))
            .subquery("balances")
        )
    # Suspension first: a suspended partner with payout details is held all the same, and
    # reinstating them is what releases the item (``release_suspension_holds``). Then: payout
    # details replaced within DETAILS_CHANGE_HOLD of the cutoff (or since): an operator
    # checks the new destination and releases the item (``release_details_hold``).
    details_changed = (
        sa.select(AuditEvent.id)
        .where(
            AuditEvent.subject_type == "partner",
            AuditEvent.subject_id == balances.c.partner_id,
            AuditEvent.action == DESTINATION_CHANGED,
            AuditEvent.created_at >= (batch.cutoff_at or utcnow()) - DETAILS_CHANGE_HOLD,
        )
        .exists()
    )
    held_because = sa.case(
        (Partner.status == PartnerStatus.SUSPENDED, sa.literal(HoldReason.SUSPENDED.value, sa.String)),
        (PayoutAccount.id.is_(None), sa.literal(HoldReason.NO_DETAILS.value, sa.String)),
        (details_changed, sa.literal(HoldReason.DETAILS_CHANGED.value, sa.String)),
        else_=sa.null(),
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
                (held_because.is_not(None), sa.literal(ItemStatus.HELD.value, sa.String)),
                else_=sa.literal(ItemStatus.PENDING.value, sa.String),
            ),
            held_because,
            PayoutAccount.method,
            _destination_sql(),
        )
        .select_from(balances)
        .join(Partner, Partner.id == balances.c.partner_id)
        .outerjoin(PayoutAccount, PayoutAccount.partner_id == balances.c.partner_id)
        .order_by(balances.c.partner_id),
    )

    def lines_of(items):
        return sa.select(Commission.id, items.c.id).join(
            items,
            sa.and_(items.c.partner_id == Commission.partner_id, items.c.status == ItemStatus.PENDING),
        )

    if postgresql:
        # One statement, one snapshot: the items and their lines are the same set of lines
        # even if a line is confirmed or returned by another transaction meanwhile.
        made_items = make_items.returning(PayoutItem.id, PayoutItem.partner_id, PayoutItem.status).cte(
            "made_items"
        )
        # Hash joins whatever the estimates: how many lines are unpaid is unknowable to the
        # planner (an anti-join against payout_lines), and when it guessed one row it joined
        # the lines to the items in a nested loop: 1M × 10k comparisons, minutes instead of
        # seconds (seen with payout_lines' statistics from a rolled-back batch). No JIT either:
        # compiling this one-off statement cost more than it saved. Both for this statement.
        previous = db.session.execute(
            sa.text("SELECT current_setting('enable_nestloop'), current_setting('jit')")
        ).one()
        db.session.execute(
            sa.text("SELECT set_config('enable_nestloop', 'off', true), set_config('jit', 'off', true)")
        )
        db.session.execute(
            sa.insert(PayoutLine)
            .add_cte(lines, made_items, nest_here=True)
            .from_select(
                ["commission_id", "payout_item_id"],
                sa.select(lines.c.id, made_items.c.id).join(
                    made_items,
                    sa.and_(
                        made_items.c.partner_id == lines.c.partner_id,
                        made_items.c.status == ItemStatus.PENDING,
                    ),
                ),
            )
        )
        db.session.execute(
            sa.text("SELECT set_config('enable_nestloop', :nestloop, true), set_config('jit', :jit, true)"),
            {"nestloop": previous[0], "jit": previous[1]},
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


def _batch_created(batch: PayoutBatch, items: int) -> None:
    events.record(
        "payout.batch_created",
        {
            "batch_id": batch.id,
            "kind": batch.kind,
            "currency": batch.currency,
            "items": items,
            "period_end": batch.period_end.isoformat() if batch.period_end else None,
        },
    )


def _paid_data(item_id: int, batch_id: int, partner_id: int, amount: int, currency: str, reference, paid_on):
    return {
        "batch_id": batch_id,
        "item_id": item_id,
        "partner_id": partner_id,
        "amount_minor": amount,
        "currency": currency,
        "reference": reference,
        "paid_on": paid_on.isoformat(),
    }


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
    _batch_created(batch, items)
    _record_suspension_holds(batch, actor)
    realtime.notify_operators("payout", {"batch": batch.id})
    realtime.notify_partners(_item_partners(batch), "earnings", {"batch": batch.id})
    return batch, True


def _record_suspension_holds(batch: PayoutBatch, actor: User | None) -> None:
    """One audit entry per item the batch held because its partner is suspended or changed
    their payout details shortly before (one insert)."""
    held = db.session.execute(
        sa.select(
            PayoutItem.id, PayoutItem.partner_id, PayoutItem.amount_minor, PayoutItem.hold_reason
        ).where(
            PayoutItem.batch_id == batch.id,
            PayoutItem.hold_reason.in_([HoldReason.SUSPENDED.value, HoldReason.DETAILS_CHANGED.value]),
        )
    ).all()
    if held:
        db.session.execute(
            sa.insert(AuditEvent),
            [
                {
                    "actor_id": actor.id if actor else None,
                    "action": "payout.item_held",
                    "subject_type": "payout_item",
                    "subject_id": item_id,
                    "data": {
                        "reason": reason,
                        "partner": partner_id,
                        "amount_minor": amount,
                    },
                }
                for item_id, partner_id, amount, reason in held
            ],
        )


def scheduled_batch_for(payout_date: date) -> PayoutBatch | None:
    return db.session.scalars(
        sa.select(PayoutBatch).where(
            PayoutBatch.kind == BatchKind.SCHEDULED, PayoutBatch.period_end == payout_date
        )
    ).first()


def request_withdrawal(program: Program, partner: Partner, now: datetime | None = None) -> PayoutBatch:
    """Pay a partner's confirmed balance now, as a one-item batch for the operators to approve."""
    now = now or utcnow()
    if partner.status == PartnerStatus.SUSPENDED:
        raise DomainError(
            _("Your account is suspended, so no payout can be requested until it is reinstated.")
        )
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
    _batch_created(batch, 1)
    _record_suspension_holds(batch, partner.user)
    realtime.notify_operators("payout", {"batch": batch.id})
    return batch


# --- suspension ------------------------------------------------------------------------

_OPEN_BATCH = (BatchStatus.REVIEW, BatchStatus.APPROVED)


def hold_for_suspension(partner: Partner, actor: User | None) -> int:
    """On suspension, hold the partner's items waiting in batches still in review.

    Their lines leave the item (as when a payment fails) and stay in the confirmed balance,
    so a held item, like one built held, has no lines. Items of approved batches are left as
    they are: the operator may already have sent that money. Returns the count held.
    """
    _lock_program_row()
    items = _items_of(partner, ItemStatus.PENDING, (BatchStatus.REVIEW,))
    for item in items:
        returned = _return_lines(item)
        item.status = ItemStatus.HELD
        item.hold_reason = HoldReason.SUSPENDED
        record_event(
            actor,
            "payout.item_held",
            "payout_item",
            item.id,
            reason=HoldReason.SUSPENDED.value,
            partner=partner.id,
            amount_minor=item.amount_minor,
            lines=returned,
        )
    if items:
        db.session.flush()
        db.session.expire_all()
        realtime.notify_operators("payout", {"partner": partner.id})
        realtime.notify(partner.id, "earnings", {"held": True})
    return len(items)


def release_suspension_holds(partner: Partner, actor: User | None, program: Program) -> int:
    """On reinstatement, release the partner's items held for suspension in open batches.

    A held item has no lines: the lines it stood for stayed in the partner's confirmed
    balance and may have changed since (refunds, clawbacks, new confirmations, or another
    batch or withdrawal may have taken them). So releasing never trusts the held amount:

    - batch still in review: the partner's lines still unpaid before the batch's cutoff are
      joined to the item now and the item's amount becomes their sum, so the operator
      reviews and pays exactly those lines. ``payout_lines`` is keyed by the line, so none
      can be in two payouts. If they no longer reach the minimum (or the partner has no
      payout details) the item stays held and the balance carries over, as at build time;
      without payout details the hold's reason becomes ``no_details``.
    - batch already approved: nothing is added to what the operator approved (it may be
      half paid, its file exported). The item stays held as a record and its lines, which
      never left the balance, go to the next batch or a withdrawal.

    Either way every line is in at most one payout and the totals equal the lines. Each
    release is audited (``payout.item_released``, with where the money goes). Returns the
    number of items joined to their batch.
    """
    _lock_program_row()
    items = _items_of(partner, ItemStatus.HELD, _OPEN_BATCH, HoldReason.SUSPENDED)
    account = account_of(partner)
    joined = 0
    for item in items:
        batch = item.batch
        outcome, lines = "next_payout", 0
        if batch.status == BatchStatus.REVIEW and account is None:
            item.hold_reason = HoldReason.NO_DETAILS
            outcome = "no_details"
        elif batch.status == BatchStatus.REVIEW:
            lines, _amount = _pay_unpaid_lines(item, batch, account, program)
            if lines:
                outcome = "in_batch"
                joined += 1
        record_event(
            actor,
            "payout.item_released",
            "payout_item",
            item.id,
            partner=partner.id,
            outcome=outcome,
            amount_minor=item.amount_minor,
            lines=lines,
        )
    if items:
        db.session.flush()
        db.session.expire_all()
        realtime.notify_operators("payout", {"partner": partner.id})
        realtime.notify(partner.id, "earnings", {"released": True})
    return joined


def release_details_hold(item: PayoutItem, actor: User, program: Program) -> PayoutItem:
    """An operator checked the new payout details of an item held for ``details_changed``
    and releases it into its batch (still in review only: nothing is added to an approved one).

    As for reinstatement, the held amount is not trusted: the partner's lines still unpaid
    before the batch's cutoff are joined to the item now, and it pays their sum to the
    destination the partner has now. Audited (``payout.item_released``).
    """
    _lock_program_row()
    db.session.refresh(item)
    batch = item.batch
    _lock_batch(batch)  # approved meanwhile? Then nothing is added to it.
    if item.status != ItemStatus.HELD or item.hold_reason != HoldReason.DETAILS_CHANGED:
        raise DomainError(_("Only a payment held because its payout details changed can be released here."))
    if batch.status != BatchStatus.REVIEW:
        raise DomainError(_("This batch is approved; the balance goes to the next payout."))
    partner = item.partner
    if partner.status == PartnerStatus.SUSPENDED:
        raise DomainError(_("The partner is suspended; reinstating them releases their payments."))
    account = account_of(partner)
    if account is None:
        raise DomainError(_("The partner has no payout details now."))
    lines, amount = _pay_unpaid_lines(item, batch, account, program)
    if not lines:
        raise DomainError(
            _("The partner's balance no longer reaches the minimum; it goes to the next payout.")
        )
    record_event(
        actor,
        "payout.item_released",
        "payout_item",
        item.id,
        partner=partner.id,
        reason=HoldReason.DETAILS_CHANGED.value,
        outcome="in_batch",
        amount_minor=amount,
        lines=lines,
    )
    db.session.flush()
    realtime.notify_operators("payout", {"batch": batch.id})
    realtime.notify(partner.id, "earnings", {"released": True})
    return item


def held_items_of(partner: Partner) -> list[PayoutItem]:
    """The partner's items held back in batches still open, with their batches."""
    return _items_of(partner, ItemStatus.HELD, _OPEN_BATCH)


def _items_of(
    partner: Partner,
    status: ItemStatus,
    batch_statuses: tuple[BatchStatus, ...],
    hold_reason: HoldReason | None = None,
) -> list[PayoutItem]:
    """The partner's items in ``status`` (and ``hold_reason``) whose batch is in one of
    ``batch_statuses``, oldest first, with their batches."""
    query = (
        sa.select(PayoutItem)
        .join(PayoutBatch, PayoutBatch.id == PayoutItem.batch_id)
        .where(
            PayoutItem.partner_id == partner.id,
            PayoutItem.status == status,
            PayoutBatch.status.in_([str(batch_status) for batch_status in batch_statuses]),
        )
        .options(selectinload(PayoutItem.batch))
        .order_by(PayoutItem.id)
    )
    if hold_reason is not None:
        query = query.where(PayoutItem.hold_reason == hold_reason)
    return list(db.session.scalars(query))


def _lines_of_item(item: PayoutItem) -> sa.ColumnElement[bool]:
    """The payout_lines rows of ``item``, reached from its partner's confirmed lines (indexed
    by partner): payout_lines has no index on the item (migration 0021), and a line is only
    ever in an item of its own partner (``check_ledger``'s ``payout_line``)."""
    partner_lines = sa.select(Commission.id).where(
        Commission.partner_id == item.partner_id, Commission.status == CommissionStatus.CONFIRMED
    )
    return sa.and_(PayoutLine.payout_item_id == item.id, PayoutLine.commission_id.in_(partner_lines))


def _return_lines(item: PayoutItem) -> int:
    """Take the item's lines off it, back into the partner's confirmed balance; the count."""
    return db.session.execute(
        sa.delete(PayoutLine).where(_lines_of_item(item)).execution_options(synchronize_session=False)
    ).rowcount


def _pay_unpaid_lines(
    item: PayoutItem, batch: PayoutBatch, account: PayoutAccount, program: Program
) -> tuple[int, int]:
    """Release a held item of a batch in review: join the partner's unpaid lines to it and
    make it pay their sum to the partner's destination now; (lines joined, their sum).

    If they no longer reach the minimum the item stays held and the lines go back to the
    balance, exactly as at build time; then the count returned is 0.
    """
    lines, amount = _join_unpaid_lines(item, batch)
    minimum = program.minimum_payout_minor if batch.kind == BatchKind.SCHEDULED else 1
    if not lines or amount < max(minimum, 1):
        _return_lines(item)
        return 0, amount
    item.amount_minor = amount
    item.status = ItemStatus.PENDING
    item.hold_reason = None
    item.method = account.method
    item.destination = _destination_of(account)
    return lines, amount


def _join_unpaid_lines(item: PayoutItem, batch: PayoutBatch) -> tuple[int, int]:
    """Join the item's partner's unpaid lines before the batch's cutoff to it; (count, sum).

    The sum is read back from the rows just written, so the amount is the lines' own total
    whatever another transaction confirmed meanwhile (writers of payout_lines hold the
    program lock, taken by the caller).
    """
    unpaid = _unpaid_lines(batch.cutoff_at, item.partner_id, batch.currency)
    db.session.execute(
        sa.insert(PayoutLine).from_select(
            ["commission_id", "payout_item_id"],
            sa.select(Commission.id, sa.literal(item.id, sa.Integer)).where(unpaid),
        )
    )
    count, total = db.session.execute(
        sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(Commission.amount_minor), 0))
        .select_from(PayoutLine)
        .join(Commission, Commission.id == PayoutLine.commission_id)
        .where(PayoutLine.payout_item_id == item.id, Commission.partner_id == item.partner_id)
    ).one()
    return int(count), int(total)


# --- operator flow --------------------------------------------------------------------


def _lock_batch(batch: PayoutBatch) -> None:
    """Lock the batch's row and read it afresh, as ``_lock_item`` does for a payment: the
    caller loaded it before its transaction became a writer, so another request may have
    approved it or recorded its payments meanwhile. Taken after the program lock and before
    any item's, so every writer of a batch takes them in the same order."""
    db.session.refresh(batch, with_for_update=True)


def approve_batch(batch: PayoutBatch, actor: User) -> PayoutBatch:
    # Serialised with what changes a batch in review (releasing or holding a payment, both
    # under the program lock): the total approved and recorded is the one that is paid.
    _lock_program_row()
    _lock_batch(batch)
    if batch.status != BatchStatus.REVIEW:
        raise DomainError(_("Only a batch waiting for review can be approved."))
    batch.status = BatchStatus.APPROVED
    batch.approved_at = utcnow()
    batch.approved_by_id = actor.id
    record_event(actor, "payout.batch_approved", "payout_batch", batch.id, total_minor=batch_total(batch))
    db.session.flush()
    # Every payment held (no payout details, suspended, details changed): nothing is left to
    # pay or record, so nothing would ever close it and it would show overdue for ever. It is
    # done now; the held balances never left the partners' balances and go to the next payout.
    _close_if_done(batch)
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


def _lock_item(item: PayoutItem) -> None:
    """Lock the item's row and read it afresh: the caller loaded it before its transaction
    became a writer, so another request may have recorded this payment meanwhile (a
    double-submitted form, two operators). Its status is then checked on what is stored."""
    db.session.refresh(item, with_for_update=True)


def mark_item_paid(item: PayoutItem, actor: User, reference: str, paid_on: date) -> PayoutItem:
    # The batch first: the payments of one batch are recorded one at a time, so the last one
    # sees every other recorded and closes the batch (``_close_if_done``).
    _lock_batch(item.batch)
    _lock_item(item)
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
    events.record(
        "payout.paid",
        _paid_data(
            item.id, item.batch_id, item.partner_id, item.amount_minor, item.currency, item.reference, paid_on
        ),
        partner_id=item.partner_id,
    )
    db.session.flush()
    _close_if_done(item.batch)
    realtime.notify(item.partner_id, "earnings", {"item": item.id, "status": "paid"})
    return item


def mark_item_failed(item: PayoutItem, actor: User, reason: str) -> PayoutItem:
    """A payment that bounced: its lines go back to the partner's balance for the next batch."""
    # Serialised with settlement: a batch being built never sees these lines half returned.
    _lock_program_row()
    _lock_batch(item.batch)
    _lock_item(item)
    if item.status == ItemStatus.PAID:
        raise DomainError(_("A paid item cannot be marked failed; record a correction instead."))
    if item.status != ItemStatus.PENDING:
        raise DomainError(_("Only a payment waiting to be made can be marked failed."))
    _item_in_approved_batch(item)
    reason = (reason or "").strip()
    if not reason:
        raise DomainError(_("Say why the payment failed."), "reason")
    returned = _return_lines(item)
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
    events.record(
        "payout.failed",
        {
            "batch_id": item.batch_id,
            "item_id": item.id,
            "partner_id": item.partner_id,
            "amount_minor": item.amount_minor,
            "currency": item.currency,
            "reason": item.failure_reason,
        },
        partner_id=item.partner_id,
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
    The batch's row is locked first, as for a single payment: a second "mark all paid" (or
    a payment recorded meanwhile) is seen, not found by the UPDATE to have moved.
    """
    _lock_batch(batch)
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
    events.record_many(
        [
            (
                "payout.paid",
                _paid_data(item_id, batch.id, partner_id, amount, batch.currency, reference, paid_on),
                partner_id,
            )
            for item_id, partner_id, amount in waiting
        ]
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
    held: int  # items held back (hold_reason: no payout details, or suspended)
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


def overdue_days(batch: PayoutBatch, today: date) -> int:
    """Days a batch still waiting (for approval or for its payments) is past its payout date;
    0 when it is closed or its date has not passed (``today``: the program's calendar day)."""
    if batch.status == BatchStatus.CLOSED:
        return 0
    return max(0, (today - batch.period_end).days)


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
    """Generic payment file: one row per payable item (``portal.csvfile`` writes it).

    Its header row stays these English identifiers in every language, on purpose: the file
    is read by a machine (a bank's or accounting tool's import mapping, an operator's
    script), which finds the columns by name. Two operators reading the console in two
    languages must download the same file for the same batch.
    """
    headers = [
        "item_id",
        "partner_ref",
        "partner_name",
        "method",
        "destination",
        "amount",
        "currency",
        "note",
    ]
    rows = (
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
        for item, ref_code, name in _payable(batch)
    )
    return csvfile.to_csv(headers, rows)


def export_paypal(batch: PayoutBatch) -> str:
    """PayPal Payouts bulk file (CSV, no header): e-mail, amount, currency, unique id, note.

    PayPal dictates this format (five columns in this order, no header row), so nothing in
    it follows the reader's language; only the note, which PayPal shows the payee, is text.
    """
    rows = (
        [
            item.destination["paypal_email"],
            to_decimal_string(item.amount_minor, item.currency),
            item.currency,
            f"payout-{item.id}",
            f"Partner payout {batch.period_end.isoformat()}",
        ]
        for item, _ref_code, _name in _payable(batch)
        if item.method == "paypal"
    )
    return csvfile.to_csv(None, rows)


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
    """The partner's confirmed lines not in a payout, summed: one row per currency of
    ``partner_balances`` (kept by triggers, migration 0021), whatever their history.

    Equal to summing those lines (``recount_balances``; ``check_ledger`` compares them)
    because every item waiting or paid equals its lines and a held or failed item has none.
    """
    return int(
        db.session.scalar(
            sa.select(
                sa.func.coalesce(
                    sa.func.sum(PartnerBalance.confirmed_minor - PartnerBalance.settled_minor), 0
                )
            ).where(PartnerBalance.partner_id == partner_id)
        )
    )


def recount_balances() -> int:
    """Rewrite ``partner_balances`` from the rows; the number of rows written. For a bulk load
    that paused the balance triggers (``bench/settle.py``); the triggers keep it otherwise."""
    db.session.execute(sa.delete(PartnerBalance))
    recount = balance_recount().subquery("recount")
    db.session.execute(
        sa.insert(PartnerBalance).from_select(
            ["partner_id", "currency", "confirmed_minor", "settled_minor"], sa.select(recount)
        )
    )
    return db.session.scalar(sa.select(sa.func.count()).select_from(PartnerBalance))


@dataclass
class Earnings:
    pending: int
    confirmed: int
    in_payout: int
    paid: int


def earnings_of(partner_id: int) -> Earnings:
    """The four figures: pending, confirmed (unpaid), in a payout not yet paid, paid to date.

    Read without going through the partner's whole ledger (the dashboard shows them on
    every refresh): pending lines through their index (only those still in their hold
    period), the confirmed balance from the partner's running totals (``confirmed_balance``),
    and what is in a payout from the payout items, which always equal the lines in them
    (both are written by the same INSERT … SELECT in ``_fill_batch``, and a line never
    leaves an item except when the item fails, which takes the item out of these figures).
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
    hold = hold_of(db.session.get(Partner, partner_id))
    # Read by the partner in a spreadsheet: titles in their language; the cells keep the codes
    # (kind, status, reason) that pages and API share, so a filter on them works in any language.
    headers = [
        _("Line"),
        _("Earned at (UTC)"),
        _("Order"),
        _("Kind"),
        _("Amount"),
        _("Currency"),
        _("Status"),
        _("Confirms on"),
        _("Reason"),
        _("Payout date"),
        _("Paid on"),
        _("Reference"),
    ]
    rows = []
    for line in ledger_of(partner_id):
        item = line.payout_item
        rows.append(
            [
                line.id,
                line.created_at.isoformat(),
                _order_of(line),
                line.kind,
                to_decimal_string(line.amount_minor, line.currency),
                line.currency,
                line_state(line, hold),
                line.confirm_after.date().isoformat(),
                line.reason_code or "",
                item.batch.period_end.isoformat() if item else "",
                item.paid_on.isoformat() if item and item.paid_on else "",
                item.reference if item and item.status == ItemStatus.PAID else "",
            ]
        )
    return csvfile.to_csv(headers, rows, for_people=True)


class LineState(enum.StrEnum):
    """Where a commission line is: the one vocabulary of pages, CSV and API."""

    PENDING = "pending"  # waiting for the hold period to end
    CONFIRMED = "confirmed"  # in the balance, goes into the next payout
    HELD = "held"  # confirmed, but the balance is held back (suspension, no payout details)
    IN_PAYOUT = "in_payout"  # in a payout not yet paid
    PAID = "paid"
    REVERSED = "reversed"  # a reversal line: taken back before it was paid
    CLAWED_BACK = "clawed_back"  # a clawback line: taken back after payout, netted later


# A conversion is as far along as its least advanced earning line.
_PROGRESS = (LineState.PENDING, LineState.CONFIRMED, LineState.HELD, LineState.IN_PAYOUT, LineState.PAID)


def line_state(line: Commission, hold: str | None = None) -> LineState:
    """Name a commission line's state. The only place that does; everything else asks here.

    pending → confirmed → in payout → paid for earnings; a correction line is ``reversed``
    or ``clawed_back`` whatever payout later nets it; a confirmed line not in a payout is
    ``held`` while its partner's balance is held back (``hold``, from ``hold_of``).
    """
    if line.kind == CommissionKind.CLAWBACK:
        return LineState.CLAWED_BACK
    if line.kind == CommissionKind.REVERSAL:
        return LineState.REVERSED
    item = line.payout_item
    if item is not None and item.status == ItemStatus.PAID:
        return LineState.PAID
    if item is not None and item.status == ItemStatus.PENDING:
        return LineState.IN_PAYOUT
    if line.status == CommissionStatus.CONFIRMED:
        return LineState.HELD if hold else LineState.CONFIRMED
    return LineState.PENDING


def lines_state(lines: list[Commission], hold: str | None = None) -> LineState | None:
    """A conversion's state from its lines' states: reversed (or clawed back) when the
    earnings are fully taken back, else the least advanced earning line's state."""
    earned = [line for line in lines if line.kind not in CORRECTION_KINDS]
    if not earned:
        return None
    if sum(line.amount_minor for line in lines) == 0 and sum(line.amount_minor for line in earned) > 0:
        clawed = any(line.kind == CommissionKind.CLAWBACK for line in lines)
        return LineState.CLAWED_BACK if clawed else LineState.REVERSED
    return min((line_state(line, hold) for line in earned), key=_PROGRESS.index)


def hold_of(partner: Partner) -> str | None:
    """Why the partner's confirmed balance is held back now (a ``HoldReason``), or None.

    Suspended: everything confirmed is frozen. No payout details: held once a batch held
    an item for it (the batch still open); adding details lets the next batch pay it.
    Details changed: a batch in review held the item until an operator releases it.
    """
    if partner.status == PartnerStatus.SUSPENDED:
        return HoldReason.SUSPENDED
    held_for_details = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(PayoutItem)
        .join(PayoutBatch, PayoutBatch.id == PayoutItem.batch_id)
        .where(
            PayoutItem.partner_id == partner.id,
            PayoutItem.hold_reason == HoldReason.NO_DETAILS,
            PayoutBatch.status.in_([str(status) for status in _OPEN_BATCH]),
        )
    )
    if held_for_details and account_of(partner) is None:
        return HoldReason.NO_DETAILS
    held_for_change = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(PayoutItem)
        .join(PayoutBatch, PayoutBatch.id == PayoutItem.batch_id)
        .where(
            PayoutItem.partner_id == partner.id,
            PayoutItem.hold_reason == HoldReason.DETAILS_CHANGED,
            PayoutBatch.status == BatchStatus.REVIEW,
        )
    )
    if held_for_change:
        return HoldReason.DETAILS_CHANGED
    return None


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


def _destination_of(account: PayoutAccount) -> dict[str, str | None]:
    return {name: getattr(account, name) for name in _DESTINATION_FIELDS[account.method]}


def _mask(text: str | None, keep_start: int = 1, keep_end: int = 0) -> str:
    text = text or ""
    if len(text) <= keep_start + keep_end + 2:
        return text[:1] + "•••"
    return text[:keep_start] + "•••" + (text[-keep_end:] if keep_end else "")


def masked_destination(method: str | None, destination: dict[str, str | None]) -> str:
    """Where a payout goes, in words that do not give it away (``j•••@e•••.org``, ``IBAN DE•••3000``)."""
    if method == "paypal":
        local, _at, domain = (destination.get("paypal_email") or "").partition("@")
        name, dot, tld = domain.rpartition(".")
        return _("PayPal %(address)s", address=f"{_mask(local)}@{_mask(name)}{dot}{tld}")
    if method == "bank":
        return _("bank account IBAN %(iban)s", iban=_mask(destination.get("iban"), 2, 4))
    if method == "other":
        return _("other payment instructions")
    return _("none")


def change_payout_details(
    partner: Partner,
    details: PayoutDetails,
    actor: User,
    current_password: str | None,
    code: str | None = None,
) -> PayoutAccount:
    """The partner's own change of their payout details: the details are checked (their
    field errors come first, so a typo is not answered with "password"), then who is there
    is asked again (``identity.confirm_identity``: the current password, and the second
    factor once enrolled), then ``save_payout_account`` stores it. A wrong password saves
    nothing."""
    _checked_details(partner, details)
    confirm_identity(actor, current_password, code)
    return save_payout_account(partner, details, actor)


def _checked_details(partner: Partner, details: PayoutDetails) -> dict:
    """The details as they are stored (trimmed, normalised), or DomainError on the field."""
    from email_validator import EmailNotValidError, validate_email

    if partner.status == PartnerStatus.SUSPENDED:
        raise DomainError(
            _("Your account is suspended, so your payout details cannot be changed until it is reinstated.")
        )
    clean = {k: (v.strip() if isinstance(v, str) else v) or None for k, v in vars(details).items()}
    method = clean["method"]
    if method == "paypal":
        if (clean["paypal_email"] or "").startswith(csvfile.FORMULA_STARTS):
            # Valid in an address, but it would be a formula in the PayPal file.
            raise DomainError(_("A PayPal e-mail address cannot start with = + - or @."), "paypal_email")
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
    return clean


def save_payout_account(partner: Partner, details: PayoutDetails, actor: User) -> PayoutAccount:
    """Check and store where the partner is paid; the change is audited and announced, and a
    change of destination is e-mailed to the partner (old and new, masked). Replacing a
    destination (not a first setup) holds the item of a batch built within
    DETAILS_CHANGE_HOLD for review. The partner's own form goes through
    ``change_payout_details``, which asks for the password first."""
    clean = _checked_details(partner, details)
    method = clean["method"]
    keep = {
        "paypal": {"paypal_email"},
        "bank": {"account_holder", "iban", "bic", "bank_name"},
        "other": {"other_instructions"},
    }
    account = account_of(partner) or PayoutAccount(partner_id=partner.id)
    before = {k: getattr(account, k) for k in clean} if account.id else {}
    old_method = account.method if account.id else None
    old_destination = _destination_of(account) if account.id else {}
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
    new_destination = _destination_of(account)
    if (old_method, old_destination) != (method, new_destination):
        replaced = old_method is not None
        if replaced:
            # What _fill_batch holds the next batch's item for (DETAILS_CHANGE_HOLD).
            record_event(
                actor, DESTINATION_CHANGED, "partner", partner.id, method_before=old_method, method=method
            )
        # The partner hears of it at their sign-in address, in this transaction (the outbox).
        delivery.payout_details_changed(
            partner,
            before=masked_destination(old_method, old_destination),
            after=masked_destination(method, new_destination),
            held=replaced,
        )
    db.session.flush()  # the audit rows carry the time of the change
    realtime.notify(partner.id, "payout_details", {"fields": changed})
    realtime.notify_operators("payout_details", {"partner": partner.id})
    return account

"""The ledger's invariants that the database cannot hold by itself, checked in one place.

The database holds what it can (CHECK, UNIQUE, NOT NULL, foreign keys, and the triggers of
migration 0011 listed in ``portal.models.rewards``). ``check_ledger`` checks the rest, each
as a few set-based queries (seconds on a million lines), and names every violation: which
check, which conversion / line / item / batch / partner, what was expected and what was
found. ``flask --app wsgi portal check-ledger`` runs it (exit 1 on any violation).

Why it is long: every invariant of the books is here, each beside the others it is read
with, and their statements are built once per database (``_built_once``): split by check,
the set-based queries that share subqueries (balances, batches, audit sums) would be
scattered over modules that must change together.

The checks, by name (``CHECKS``):

- ``line_rule``: an earning line is what its stored rule gives: a percent rule's rate of the
  conversion's amount (half-even), a flat rule's amount, a bonus's amount, 0 for an ended renewal;
- ``conversion_net``: a conversion that is not rejected nets, over all its lines, each earning
  line minus its refunded share, round_half_even(line × refunded / amount) (cumulative per
  line, exactly as ``commissions.reverse_for_refund`` writes it);
- ``rejected_net``: a rejected conversion's lines net to 0;
- ``reversal_exceeds``: a line's corrections never take back more than it earned;
- ``reversal_target``: a correction takes back an earning line of the same partner, currency
  and conversion;
- ``refunds_sum``: a conversion's refunds (table ``refunds``) add up to its ``refunded_minor``
  (a sale in another currency: to its ``original_refunded_minor``, the refunds being in its currency);
- ``fx_amounts``: a sale in another currency has, in the program's currency, its original
  amount and refunds converted at its own rate (``fx.convert_minor``), or 0 while it waits for one;
- ``item_total``: a pending or paid payout item equals the sum of its lines; a held or failed
  item has no lines;
- ``payout_line``: every row of payout_lines (no foreign keys, deliberately) joins a confirmed
  line and an item of the same partner and currency;
- ``batch_items``: a batch's items are in its currency; a batch in review has nothing paid or
  failed, a closed one nothing waiting; a scheduled batch has the items its build recorded, a
  withdrawal the amount the partner asked for;
- ``partner_balance``: pending + confirmed + in payout + paid − owed (the partner's figures,
  items counted as the pages count them) equals the sum of the partner's lines;
- ``running_balance``: the running totals the partner's confirmed balance is read from
  (``partner_balances``, kept by triggers) equal a recount: per partner and currency, the sum
  of the confirmed lines and of the items waiting or paid;
- ``audit_missing``: every money change has its record: a conversion's refunds add up to its
  ``conversion.refunded`` events, a rejection or approval by an operator has its event, a batch
  its ``payout.batch_built`` / ``payout.withdrawal_requested`` and (once approved)
  ``payout.batch_approved``, a paid or failed item its ``payout.item_paid`` / ``payout.item_failed``,
  a ladder bonus its month close.
"""

from __future__ import annotations

import contextlib
import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy as sa

from portal.extensions import db
from portal.models import (
    AuditEvent,
    BatchKind,
    BatchStatus,
    Commission,
    CommissionStatus,
    Conversion,
    ConversionStatus,
    ItemStatus,
    MonthClose,
    PartnerBalance,
    PayoutBatch,
    PayoutItem,
    PayoutLine,
    Refund,
)

__all__ = ["CHECKS", "Violation", "balance_recount", "check_ledger", "summary", "without_ledger_triggers"]

_CORRECTIONS = ("reversal", "clawback")
_Built = TypeVar("_Built")


@dataclass(frozen=True, order=True)
class Violation:
    kind: str  # the check's name (CHECKS)
    subject: str  # conversion, line, item, batch, partner
    subject_id: int
    expected: int | str | None
    found: int | str | None
    detail: str = ""

    def __str__(self) -> str:
        text = f"{self.kind}: {self.subject} {self.subject_id}: expected {self.expected}, found {self.found}"
        return f"{text} ({self.detail})" if self.detail else text


# --- arithmetic in SQL ---------------------------------------------------------------------------


def _big(value) -> sa.ColumnElement:
    # PostgreSQL multiplies integers as int4; a sale × a rate or a refund overflows that.
    return sa.cast(value, sa.BigInteger)


def _round_half_even(numerator, denominator) -> sa.ColumnElement:
    """``rewards.round_half_even`` in SQL, for a numerator >= 0 and a denominator > 0."""
    quotient = numerator // denominator
    twice_remainder = 2 * (numerator - quotient * denominator)
    up = sa.or_(twice_remainder > denominator, sa.and_(twice_remainder == denominator, quotient % 2 == 1))
    return quotient + sa.case((up, 1), else_=0)


def _is_correction(line=Commission) -> sa.ColumnElement[bool]:
    return line.kind.in_(_CORRECTIONS)


def _rows(query) -> list[sa.Row]:
    return list(db.session.execute(query))


def _built_once(build: Callable[[], _Built]) -> Callable[[], _Built]:
    """``build``'s statements, built at its first call for each database dialect and reused.

    A statement never changes once built, and SQLAlchemy keeps its cache key on it: building the
    checks' two dozen statements again at every call, and keying each again, was most of a
    check's time on small books (the ledger's property tests run it after every step)."""
    built: dict[str, _Built] = {}

    @functools.wraps(build)
    def statements() -> _Built:
        dialect = db.session.get_bind().dialect.name
        if dialect not in built:
            built[dialect] = build()
        return built[dialect]

    return statements


# --- the checks ------------------------------------------------------------------------------------


def _rule_fields():
    """The rule fields of each line's explanation, and what to join to read them.

    PostgreSQL stores ``json`` (text): each ``->>`` parses the document again, so it is read
    once per line into a record (json_to_record), five times faster on a million lines."""
    if db.session.get_bind().dialect.name == "postgresql":
        record = (
            sa.func.json_to_record(Commission.explanation)
            .table_valued(
                sa.column("rule", sa.Text),
                sa.column("type", sa.Text),
                sa.column("rate_bp", sa.BigInteger),
                sa.column("flat_minor", sa.BigInteger),
                sa.column("bonus_minor", sa.BigInteger),
            )
            .render_derived(name="rule_fields", with_types=True)
            .lateral()
        )
        c = record.c
        return record, (c.rule, c.type, c.rate_bp, c.flat_minor, c.bonus_minor)
    e = Commission.explanation
    fields = ("rule", "type", "rate_bp", "flat_minor", "bonus_minor")
    return None, tuple(
        e[name].as_string() if name in ("rule", "type") else e[name].as_integer() for name in fields
    )


@_built_once
def _line_rule_query() -> sa.Select:
    record, (rule, kind, rate_bp, flat_minor, bonus_minor) = _rule_fields()
    sale = sa.func.coalesce(Conversion.amount_minor, 0)
    expected = sa.case(
        (rule == "renewal_ended", 0),
        (kind == "percent", _round_half_even(_big(sale) * rate_bp, 10_000)),
        (kind == "flat", flat_minor),
        (rule.in_(("campaign_bonus", "ladder")), bonus_minor),
        else_=sa.null(),
    )
    lines = (
        sa.select(Commission.id, Commission.amount_minor, expected.label("expected"), rule.label("rule"))
        .select_from(Commission)
        .outerjoin(Conversion, Conversion.id == Commission.conversion_id)
        .where(~_is_correction())
    )
    if record is not None:
        lines = lines.join(record, sa.true())
    lines = lines.subquery()
    return sa.select(lines).where(
        sa.or_(lines.c.expected.is_(None), lines.c.expected != lines.c.amount_minor)
    )


def _line_rule() -> list[Violation]:
    return [
        Violation("line_rule", "line", r.id, r.expected, r.amount_minor, f"rule {r.rule}")
        for r in _rows(_line_rule_query())
    ]


@_built_once
def _conversion_net_query() -> sa.Select:
    sale, refunded = Conversion.amount_minor, Conversion.refunded_minor
    share = sa.case((sale > 0, _round_half_even(_big(Commission.amount_minor) * refunded, sale)), else_=0)
    expected_line = sa.case((_is_correction(), 0), else_=Commission.amount_minor - share)
    per_conversion = (
        sa.select(
            Conversion.id,
            Conversion.status,
            sa.func.sum(expected_line).label("expected"),
            sa.func.sum(Commission.amount_minor).label("found"),
        )
        .join(Commission, Commission.conversion_id == Conversion.id)
        .group_by(Conversion.id, Conversion.status)
        .subquery()
    )
    rejected = per_conversion.c.status == ConversionStatus.REJECTED
    return sa.select(per_conversion).where(
        sa.or_(
            sa.and_(~rejected, per_conversion.c.expected != per_conversion.c.found),
            sa.and_(rejected, per_conversion.c.found != 0),
        )
    )


def _conversion_net() -> list[Violation]:
    out = []
    for r in _rows(_conversion_net_query()):
        if r.status == ConversionStatus.REJECTED:
            out.append(Violation("rejected_net", "conversion", r.id, 0, int(r.found), "rejected"))
        else:
            out.append(Violation("conversion_net", "conversion", r.id, int(r.expected), int(r.found)))
    return out


@_built_once
def _reversals_queries() -> tuple[sa.Select, sa.Select]:
    """(lines whose corrections take back more than they earned, corrections of the wrong line)."""
    target = sa.orm.aliased(Commission)
    taken = (
        sa.select(
            Commission.reverses_id.label("line_id"), (-sa.func.sum(Commission.amount_minor)).label("taken")
        )
        .where(Commission.reverses_id.is_not(None))
        .group_by(Commission.reverses_id)
        .subquery()
    )
    exceeds = sa.select(Commission.id, Commission.amount_minor, taken.c.taken).join(
        taken, taken.c.line_id == Commission.id
    )
    exceeds = exceeds.where(taken.c.taken > Commission.amount_minor)
    mismatched = (
        sa.select(Commission.id, target.id.label("target_id"), target.kind)
        .join(target, target.id == Commission.reverses_id)
        .where(
            sa.or_(
                _is_correction(target),
                Commission.partner_id != target.partner_id,
                Commission.currency != target.currency,
                Commission.conversion_id.is_distinct_from(target.conversion_id),
            )
        )
    )
    return exceeds, mismatched


def _reversals() -> list[Violation]:
    exceeds, mismatched = _reversals_queries()
    out = [
        Violation(
            "reversal_exceeds", "line", r.id, r.amount_minor, int(r.taken), "taken back more than earned"
        )
        for r in _rows(exceeds)
    ]
    out += [
        Violation(
            "reversal_target",
            "line",
            r.id,
            f"an earning line like line {r.target_id}",
            r.kind,
            "a correction of another partner, currency or conversion, or of a correction",
        )
        for r in _rows(mismatched)
    ]
    return out


@_built_once
def _refunds_sum_query() -> sa.Select:
    refunds = (
        sa.select(Refund.conversion_id, sa.func.sum(Refund.amount_minor).label("total"))
        .group_by(Refund.conversion_id)
        .subquery()
    )
    total = sa.func.coalesce(refunds.c.total, 0)
    refunded = _sale_refunded()
    return (
        sa.select(Conversion.id, refunded.label("refunded"), total.label("total"))
        .outerjoin(refunds, refunds.c.conversion_id == Conversion.id)
        .where(total != refunded)
    )


def _refunds_sum() -> list[Violation]:
    return [
        Violation("refunds_sum", "conversion", r.id, r.refunded, int(r.total), "refunds vs refunded_minor")
        for r in _rows(_refunds_sum_query())
    ]


def _sale_refunded() -> sa.ColumnElement[int]:
    """What the shop refunded, in the sale's own currency (refunds and their events are)."""
    return sa.func.coalesce(Conversion.original_refunded_minor, Conversion.refunded_minor)


@_built_once
def _fx_amounts_query() -> sa.Select:
    return sa.select(
        Conversion.id,
        Conversion.amount_minor,
        Conversion.refunded_minor,
        Conversion.currency,
        Conversion.original_amount_minor,
        Conversion.original_refunded_minor,
        Conversion.original_currency,
        Conversion.fx_rate,
    ).where(Conversion.original_currency.is_not(None))


def _fx_amounts() -> list[Violation]:
    from portal.services.fx import convert_minor

    out = []
    for r in db.session.execute(_fx_amounts_query()).yield_per(10_000):
        if r.fx_rate is None:
            expected = (0, 0)
        else:
            expected = (
                convert_minor(r.original_amount_minor, r.original_currency, r.currency, r.fx_rate),
                convert_minor(r.original_refunded_minor, r.original_currency, r.currency, r.fx_rate),
            )
        if (r.amount_minor, r.refunded_minor) != expected:
            out.append(
                Violation(
                    "fx_amounts",
                    "conversion",
                    r.id,
                    "{}, {}".format(*expected),
                    f"{r.amount_minor}, {r.refunded_minor}",
                    "amount, refunded",
                )
            )
    return out


def _item_lines() -> sa.Subquery:
    return (
        sa.select(
            PayoutLine.payout_item_id.label("item_id"),
            sa.func.sum(Commission.amount_minor).label("total"),
            sa.func.count().label("lines"),
        )
        .join(Commission, Commission.id == PayoutLine.commission_id)
        .group_by(PayoutLine.payout_item_id)
        .subquery()
    )


@_built_once
def _item_total_query() -> sa.Select:
    lines = _item_lines()
    total = sa.func.coalesce(lines.c.total, 0)
    payable = PayoutItem.status.in_((ItemStatus.PENDING, ItemStatus.PAID))
    return (
        sa.select(
            PayoutItem.id, PayoutItem.status, PayoutItem.amount_minor, total.label("total"), lines.c.lines
        )
        .outerjoin(lines, lines.c.item_id == PayoutItem.id)
        .where(
            sa.or_(
                sa.and_(payable, total != PayoutItem.amount_minor),
                sa.and_(~payable, lines.c.lines.is_not(None)),
            )
        )
    )


def _item_total() -> list[Violation]:
    out = []
    for r in _rows(_item_total_query()):
        if r.status in (ItemStatus.PENDING, ItemStatus.PAID):
            out.append(
                Violation("item_total", "item", r.id, r.amount_minor, int(r.total), f"{r.status} item")
            )
        else:
            out.append(
                Violation(
                    "item_total", "item", r.id, 0, int(r.total), f"{r.status} item keeps {r.lines} lines"
                )
            )
    return out


@_built_once
def _payout_lines_query() -> sa.Select:
    return (
        sa.select(
            PayoutLine.commission_id,
            PayoutLine.payout_item_id,
            Commission.id.label("line_id"),
            Commission.status,
            PayoutItem.id.label("item_id"),
        )
        .outerjoin(Commission, Commission.id == PayoutLine.commission_id)
        .outerjoin(PayoutItem, PayoutItem.id == PayoutLine.payout_item_id)
        .where(
            sa.or_(
                Commission.id.is_(None),
                PayoutItem.id.is_(None),
                Commission.partner_id != PayoutItem.partner_id,
                Commission.currency != PayoutItem.currency,
                Commission.status != CommissionStatus.CONFIRMED,
            )
        )
    )


def _payout_lines() -> list[Violation]:
    out = []
    for r in _rows(_payout_lines_query()):
        if r.line_id is None or r.item_id is None:
            found = "no such line" if r.line_id is None else "no such item"
            detail = f"in item {r.payout_item_id}"
        elif r.status != CommissionStatus.CONFIRMED:
            found, detail = f"a {r.status} line", f"in item {r.payout_item_id}"
        else:
            found, detail = "another partner's or currency's item", f"item {r.payout_item_id}"
        out.append(
            Violation(
                "payout_line",
                "line",
                r.commission_id,
                "a confirmed line of the item's partner",
                found,
                detail,
            )
        )
    return out


def _json_int(element) -> sa.ColumnElement[int]:
    """A whole number stored in an audit event's JSON, read as 64 bits: ``as_integer()`` casts
    to PostgreSQL's 32-bit integer, which an IDR refund (3,000,000,000 minor units) or a large
    program's payout batch overflows."""
    return sa.cast(element.as_string(), sa.BigInteger)


def _event_sum(action: str, key: str, subject_type: str) -> sa.Subquery:
    return (
        sa.select(
            AuditEvent.subject_id.label("subject_id"),
            sa.func.sum(_json_int(AuditEvent.data[key])).label("total"),
            sa.func.count().label("events"),
        )
        .where(AuditEvent.action == action, AuditEvent.subject_type == subject_type)
        .group_by(AuditEvent.subject_id)
        .subquery()
    )


@_built_once
def _batch_items_queries() -> tuple[sa.Select, sa.Select, sa.Select]:
    """(items per batch and status, what each batch's build recorded, batches with a released item)."""
    by_status = (
        sa.select(
            PayoutBatch.id,
            PayoutBatch.kind,
            PayoutBatch.status,
            PayoutBatch.currency,
            PayoutItem.status.label("item_status"),
            PayoutItem.currency.label("item_currency"),
            sa.func.count().label("items"),
            sa.func.sum(PayoutItem.amount_minor).label("total"),
        )
        .join(PayoutItem, PayoutItem.batch_id == PayoutBatch.id)
        .group_by(
            PayoutBatch.id,
            PayoutBatch.kind,
            PayoutBatch.status,
            PayoutBatch.currency,
            PayoutItem.status,
            PayoutItem.currency,
        )
    )
    built = sa.select(
        AuditEvent.subject_id,
        AuditEvent.action,
        _json_int(AuditEvent.data["items"]).label("items"),
        _json_int(AuditEvent.data["amount_minor"]).label("amount"),
    ).where(
        AuditEvent.subject_type == "payout_batch",
        AuditEvent.action.in_(("payout.batch_built", "payout.withdrawal_requested")),
    )
    # A withdrawal held (its partner suspended) and released is re-counted from the lines
    # still unpaid at release (``payout.item_released``): it no longer owes the asked amount.
    released = sa.select(PayoutItem.batch_id).join(
        AuditEvent,
        sa.and_(
            AuditEvent.subject_type == "payout_item",
            AuditEvent.subject_id == PayoutItem.id,
            AuditEvent.action == "payout.item_released",
        ),
    )
    return by_status, built, released


def _batch_items() -> list[Violation]:
    by_status_query, built_query, released_query = _batch_items_queries()
    out = []
    by_status = _rows(by_status_query)
    counts: dict[int, int] = defaultdict(int)
    totals: dict[int, int] = defaultdict(int)
    kinds: dict[int, str] = {}
    for r in by_status:
        counts[r.id] += r.items
        totals[r.id] += int(r.total)
        kinds[r.id] = r.kind
        if r.item_currency != r.currency:
            out.append(Violation("batch_items", "batch", r.id, r.currency, r.item_currency, "item currency"))
        if r.status == BatchStatus.REVIEW and r.item_status in (ItemStatus.PAID, ItemStatus.FAILED):
            out.append(
                Violation(
                    "batch_items",
                    "batch",
                    r.id,
                    "no item paid or failed",
                    f"{r.items} {r.item_status}",
                    "batch in review",
                )
            )
        if r.status == BatchStatus.CLOSED and r.item_status == ItemStatus.PENDING:
            out.append(
                Violation(
                    "batch_items", "batch", r.id, "no item waiting", f"{r.items} pending", "closed batch"
                )
            )
    built = {r.subject_id: r for r in _rows(built_query)}
    released = set(db.session.scalars(released_query))
    for batch_id, kind in kinds.items():
        event = built.get(batch_id)
        if event is None or batch_id in released:
            continue  # audit_missing names a missing one
        if kind == BatchKind.SCHEDULED and event.items is not None and event.items != counts[batch_id]:
            out.append(
                Violation("batch_items", "batch", batch_id, event.items, counts[batch_id], "items built")
            )
        if kind == BatchKind.WITHDRAWAL and event.amount is not None and event.amount != totals[batch_id]:
            out.append(
                Violation(
                    "batch_items", "batch", batch_id, event.amount, totals[batch_id], "amount withdrawn"
                )
            )
    return out


@_built_once
def _partner_balance_queries() -> tuple[sa.Select, sa.Select]:
    """(the partners' lines by status and whether in a payout, their items waiting or paid)."""
    in_payout = PayoutLine.commission_id.is_not(None)
    lines = (
        sa.select(
            Commission.partner_id,
            Commission.currency,
            Commission.status,
            in_payout.label("in_payout"),
            sa.func.sum(Commission.amount_minor).label("total"),
        )
        .outerjoin(PayoutLine, PayoutLine.commission_id == Commission.id)
        .group_by(Commission.partner_id, Commission.currency, Commission.status, in_payout)
    )
    items = (
        sa.select(
            PayoutItem.partner_id,
            PayoutItem.currency,
            PayoutItem.status,
            sa.func.sum(PayoutItem.amount_minor).label("total"),
        )
        .where(PayoutItem.status.in_((ItemStatus.PENDING, ItemStatus.PAID)))
        .group_by(PayoutItem.partner_id, PayoutItem.currency, PayoutItem.status)
    )
    return lines, items


def _partner_balance() -> list[Violation]:
    lines_query, items_query = _partner_balance_queries()
    lines, items = _rows(lines_query), _rows(items_query)
    ledger: dict[tuple[int, str], int] = defaultdict(int)
    pending: dict[tuple[int, str], int] = defaultdict(int)
    unpaid: dict[tuple[int, str], int] = defaultdict(int)
    paid_out: dict[tuple[int, str], int] = defaultdict(int)
    for r in lines:
        key = (r.partner_id, r.currency)
        ledger[key] += int(r.total)
        if r.status == CommissionStatus.PENDING:
            pending[key] += int(r.total)
        elif not r.in_payout:
            unpaid[key] += int(r.total)
    for r in items:
        paid_out[(r.partner_id, r.currency)] += int(r.total)  # in payout + paid
    out = []
    for key in sorted(set(ledger) | set(paid_out)):
        confirmed, owed = max(unpaid[key], 0), max(-unpaid[key], 0)
        figures = pending[key] + confirmed + paid_out[key] - owed
        if figures != ledger[key]:
            out.append(
                Violation(
                    "partner_balance",
                    "partner",
                    key[0],
                    ledger[key],
                    figures,
                    f"{key[1]}: pending + confirmed + in payout + paid - owed vs the sum of the lines",
                )
            )
    return out


def balance_recount() -> sa.Select:
    """(partner_id, currency, confirmed_minor, settled_minor) counted from the rows themselves:
    what ``partner_balances`` must hold (the migration's backfill, the same SQL)."""
    counted_items = PayoutItem.status.in_((ItemStatus.PENDING, ItemStatus.PAID))
    rows = sa.union_all(
        sa.select(
            Commission.partner_id,
            Commission.currency,
            Commission.amount_minor.label("confirmed"),
            sa.literal(0, sa.BigInteger).label("settled"),
        ).where(Commission.status == CommissionStatus.CONFIRMED),
        sa.select(
            PayoutItem.partner_id, PayoutItem.currency, sa.literal(0, sa.BigInteger), PayoutItem.amount_minor
        ).where(counted_items),
    ).subquery("totals")
    return sa.select(
        rows.c.partner_id,
        rows.c.currency,
        sa.func.sum(rows.c.confirmed).label("confirmed_minor"),
        sa.func.sum(rows.c.settled).label("settled_minor"),
    ).group_by(rows.c.partner_id, rows.c.currency)


_BALANCE_COLUMNS = (("confirmed_minor", "confirmed lines"), ("settled_minor", "items in payout or paid"))


@_built_once
def _running_balance_queries() -> tuple[sa.Select, sa.Select]:
    return balance_recount(), sa.select(*PartnerBalance.__table__.c)


def _running_balance() -> list[Violation]:
    recount, stored_query = _running_balance_queries()
    counted = {(r.partner_id, r.currency): r for r in _rows(recount)}
    stored = {(r.partner_id, r.currency): r for r in _rows(stored_query)}
    out = []
    for key in sorted(set(counted) | set(stored)):
        for column, what in _BALANCE_COLUMNS:
            expected = int(getattr(counted[key], column)) if key in counted else 0
            found = int(getattr(stored[key], column)) if key in stored else 0
            if expected != found:
                out.append(
                    Violation(
                        "running_balance",
                        "partner",
                        key[0],
                        expected,
                        found,
                        f"{key[1]}: partner_balances.{column} vs the sum of the {what}",
                    )
                )
    return out


@_built_once
def _audit_missing_queries() -> tuple[sa.Select, list[tuple[str, str, sa.Select]], sa.Select]:
    """(conversions whose refunds and their events differ, [(subject, action, the subjects
    lacking that event)], lines of a month never closed)."""
    refunded = _event_sum("conversion.refunded", "amount_minor", "conversion")
    recorded = sa.func.coalesce(refunded.c.total, 0)
    refunds = (
        sa.select(Conversion.id, _sale_refunded().label("refunded"), recorded.label("recorded"))
        .outerjoin(refunded, refunded.c.subject_id == Conversion.id)
        .where(recorded != _sale_refunded())
    )

    def without(action: str, subject_type: str, subject_id) -> sa.ColumnElement[bool]:
        return ~sa.exists().where(
            AuditEvent.action == action,
            AuditEvent.subject_type == subject_type,
            AuditEvent.subject_id == subject_id,
        )

    missing: list[tuple[str, str, sa.Select]] = []
    # From the corrections (few) to their conversions, not from every conversion to its lines.
    rejected_by_operator = Conversion.id.in_(
        sa.select(Commission.conversion_id).where(_is_correction(), Commission.reason_code != "refund")
    )
    for action, condition in (
        ("conversion.rejected", rejected_by_operator),
        (
            "conversion.approved",
            sa.and_(Conversion.reviewed_by_id.is_not(None), Conversion.status != ConversionStatus.REJECTED),
        ),
    ):
        query = sa.select(Conversion.id).where(condition, without(action, "conversion", Conversion.id))
        missing.append(("conversion", action, query))

    for action, condition in (
        ("payout.batch_built", PayoutBatch.kind == BatchKind.SCHEDULED),
        ("payout.withdrawal_requested", PayoutBatch.kind == BatchKind.WITHDRAWAL),
        ("payout.batch_approved", PayoutBatch.status != BatchStatus.REVIEW),
    ):
        query = sa.select(PayoutBatch.id).where(condition, without(action, "payout_batch", PayoutBatch.id))
        missing.append(("batch", action, query))

    for action, status in (("payout.item_paid", ItemStatus.PAID), ("payout.item_failed", ItemStatus.FAILED)):
        query = sa.select(PayoutItem.id).where(
            PayoutItem.status == status, without(action, "payout_item", PayoutItem.id)
        )
        missing.append(("item", action, query))

    month_closes = sa.select(Commission.id, Commission.period).where(
        Commission.period.is_not(None), ~sa.exists().where(MonthClose.month == Commission.period)
    )
    return refunds, missing, month_closes


def _audit_missing() -> list[Violation]:
    refunds, missing, month_closes = _audit_missing_queries()
    out = [
        Violation(
            "audit_missing",
            "conversion",
            r.id,
            r.refunded,
            int(r.recorded),
            "conversion.refunded events",
        )
        for r in _rows(refunds)
    ]
    for subject, action, query in missing:
        out += [Violation("audit_missing", subject, r.id, action, None) for r in _rows(query)]
    out += [
        Violation("audit_missing", "line", r.id, f"month close {r.period}", None) for r in _rows(month_closes)
    ]
    return out


CHECKS: dict[str, Callable[[], list[Violation]]] = {
    "line_rule": _line_rule,
    # One pass over the lines gives both: rejected conversions are held to 0.
    "conversion_net": _conversion_net,
    "rejected_net": _conversion_net,
    "reversal_exceeds": _reversals,
    "reversal_target": _reversals,
    "refunds_sum": _refunds_sum,
    "fx_amounts": _fx_amounts,
    "item_total": _item_total,
    "payout_line": _payout_lines,
    "batch_items": _batch_items,
    "partner_balance": _partner_balance,
    "running_balance": _running_balance,
    "audit_missing": _audit_missing,
}


def check_ledger(skip: Iterable[str] = ()) -> list[Violation]:
    """Every violation of the ledger's invariants, sorted; [] when the books hold.

    ``skip`` names checks (``CHECKS``) to leave out."""
    skipped = set(skip)
    unknown = skipped - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown checks: {sorted(unknown)}")
    wanted = [name for name in CHECKS if name not in skipped]
    found: set[Violation] = set()
    ran: set[Callable] = set()
    for name in wanted:
        check = CHECKS[name]
        if check not in ran:
            ran.add(check)
            found.update(check())
    return sorted(v for v in found if v.kind in wanted)


def summary(violations: list[Violation]) -> str:
    if not violations:
        return "0 violations"
    counts: dict[str, int] = defaultdict(int)
    for violation in violations:
        counts[violation.kind] += 1
    by_kind = ", ".join(f"{kind} {count}" for kind, count in sorted(counts.items()))
    return f"{len(violations)} violations ({by_kind})"


# --- throw-away data ------------------------------------------------------------------------------


@contextlib.contextmanager
def without_ledger_triggers(connection: sa.Connection) -> Iterator[None]:
    """Inside the caller's transaction, let rows of the ledger's tables be deleted or rewritten.

    Only for throw-away data (tests and benches that committed rows and remove them): the
    triggers are disabled (PostgreSQL) or dropped and re-created from their own definition
    (SQLite) in the same transaction, so a rollback or a commit leaves them in place. Commit
    after the block, never inside it."""
    if connection.dialect.name == "postgresql":
        # The refusals only, by name as on SQLite: the triggers that keep partner_balances
        # (migration 0021) stay on, so the running totals follow whatever is removed.
        triggers = connection.exec_driver_sql(
            "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal "
            "AND left(tgname, 7) = 'ledger_'"
        ).all()
        for table, name in triggers:
            connection.exec_driver_sql(f'ALTER TABLE {table} DISABLE TRIGGER "{name}"')
        try:
            yield
        finally:
            for table, name in triggers:
                connection.exec_driver_sql(f'ALTER TABLE {table} ENABLE TRIGGER "{name}"')
        return
    triggers = connection.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'ledger\\_%' ESCAPE '\\'"
    ).all()
    for name, _sql in triggers:
        connection.exec_driver_sql(f"DROP TRIGGER {name}")
    try:
        yield
    finally:
        for _name, sql in triggers:
            connection.exec_driver_sql(sql)

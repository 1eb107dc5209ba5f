"""How much a conversion earns. The rewards engine replaces ``compute_commission``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm.attributes import set_committed_value

from portal.extensions import db
from portal.models import (
    CORRECTION_KINDS,
    Commission,
    CommissionKind,
    CommissionStatus,
    CommissionType,
    Conversion,
    Program,
    RejectionReason,
)
from portal.models.types import utcnow


@dataclass
class CommissionDraft:
    kind: str
    amount_minor: int
    explanation: dict[str, Any] = field(default_factory=dict)


def _round_half_up(numerator: int, denominator: int) -> int:
    return (2 * numerator + denominator) // (2 * denominator)


def compute_commission(program: Program, conversion: Conversion) -> list[CommissionDraft]:
    """The program's base commission on the conversion's amount (one line)."""
    if program.commission_type == CommissionType.PERCENT:
        amount = _round_half_up(conversion.amount_minor * program.commission_percent_bp, 10_000)
        explanation = {
            "rule": "base",
            "type": "percent",
            "rate_bp": program.commission_percent_bp,
            "sale_minor": conversion.amount_minor,
            "result_minor": amount,
        }
    else:
        amount = program.commission_flat_minor
        explanation = {"rule": "base", "type": "flat", "flat_minor": amount, "result_minor": amount}
    return [CommissionDraft(CommissionKind.BASE, amount, explanation)]


_LINES = Commission.__table__
_INSERT_LINES = sa.insert(_LINES).returning(_LINES.c.id, sort_by_parameter_order=True)
_LINE_COLUMNS = tuple(column.key for column in _LINES.columns if column.key != "id")


def earn(program: Program, conversion: Conversion) -> list[Commission]:
    """Write the commission lines of an attributed conversion, pending until the hold ends.
    A stored conversion's lines take one INSERT … RETURNING id, not the unit of work (the
    API's hot path); an unsaved one's are added to the session with it."""
    from portal.services.tracking import stored_as_loaded

    confirm_after = conversion.occurred_at + timedelta(days=program.hold_period_days)
    now = utcnow()
    rows = []
    for draft in compute_commission(program, conversion):
        row = dict.fromkeys(_LINE_COLUMNS)
        row.update(
            conversion_id=conversion.id,
            partner_id=conversion.partner_id,
            kind=draft.kind,
            amount_minor=draft.amount_minor,
            currency=conversion.currency,
            status=CommissionStatus.PENDING,
            confirm_after=confirm_after,
            explanation=draft.explanation,
            created_at=now,
        )
        rows.append(row)
    if conversion.id is None:  # not stored yet: the unit of work inserts both, in order
        lines = [
            Commission(conversion=conversion, **{k: v for k, v in row.items() if v is not None})
            for row in rows
        ]
        db.session.add_all(lines)
        return lines
    ids = db.session.execute(_INSERT_LINES, rows).scalars().all() if rows else []
    lines = [stored_as_loaded(Commission(id=line_id, **row)) for line_id, row in zip(ids, rows, strict=True)]
    for line in lines:
        set_committed_value(line, "conversion", conversion)
    set_committed_value(conversion, "commissions", [*conversion.commissions, *lines])
    return lines


def net_commission(conversion: Conversion) -> int:
    return sum(line.amount_minor for line in conversion.commissions)


def correction(
    base: Commission, amount_minor: int, reason: str, note: str | None, explanation: dict
) -> Commission:
    """A negative line that takes back (part of) ``base``; the original is never edited.

    Before the base line is in a payout it is a *reversal* with the base's own
    status; once it is in a payout it is a *clawback*, confirmed at once, that
    the next batch nets off.
    """
    now = utcnow()
    in_payout = base.payout_item_id is not None
    confirmed = in_payout or base.status == CommissionStatus.CONFIRMED
    line = Commission(
        conversion=base.conversion,
        partner_id=base.partner_id,
        kind=CommissionKind.CLAWBACK if in_payout else CommissionKind.REVERSAL,
        amount_minor=-amount_minor,
        currency=base.currency,
        status=CommissionStatus.CONFIRMED if confirmed else CommissionStatus.PENDING,
        confirm_after=now if confirmed else base.confirm_after,
        confirmed_at=now if confirmed else None,
        reverses_id=base.id,
        reason_code=reason,
        note=note,
        explanation=explanation,
    )
    db.session.add(line)
    return line


def reverse_for_refund(conversion: Conversion, note: str | None) -> Commission | None:
    """Reverse the share of commission that matches the share of the sale refunded so far.

    Cumulative: after refunds of 30 % and 70 % the reversals add up to exactly
    the earned amount, whatever the rounding of each step.
    """
    earned = sum(line.amount_minor for line in conversion.commissions if line.kind not in CORRECTION_KINDS)
    reversed_so_far = -sum(
        line.amount_minor for line in conversion.commissions if line.kind in CORRECTION_KINDS
    )
    target = (
        _round_half_up(earned * conversion.refunded_minor, conversion.amount_minor)
        if conversion.amount_minor
        else earned
    )
    step = target - reversed_so_far
    if step <= 0:
        return None
    base = next(line for line in conversion.commissions if line.kind not in CORRECTION_KINDS)
    return correction(
        base,
        step,
        RejectionReason.REFUND,
        note,
        {
            "rule": "refund",
            "refunded_minor": conversion.refunded_minor,
            "sale_minor": conversion.amount_minor,
            "earned_minor": earned,
            "reversed_total_minor": target,
        },
    )


def commission_summary(conversion: Conversion) -> dict | None:
    """The commission as the API and pages show it: net amount, status, confirmation date."""
    lines = conversion.commissions
    if not lines:
        return None
    net = sum(line.amount_minor for line in lines)
    earned = sum(line.amount_minor for line in lines if line.kind not in CORRECTION_KINDS)
    if net == 0 and earned > 0:
        status = "reversed"
    elif all(line.status == CommissionStatus.CONFIRMED for line in lines):
        status = "confirmed"
    else:
        status = "pending"
    return {
        "amount_minor": net,
        "currency": lines[0].currency,
        "status": status,
        "confirm_after": min(line.confirm_after for line in lines),
    }


def pending_total(partner_id: int) -> int:
    return (
        db.session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(Commission.amount_minor), 0)).where(
                Commission.partner_id == partner_id, Commission.status == CommissionStatus.PENDING
            )
        )
        or 0
    )

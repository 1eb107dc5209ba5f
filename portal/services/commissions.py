"""How much a conversion earns: the rewards engine's rules, written as ledger lines.

``compute_commission`` is the one entry point tracking uses (through ``earn``); the rules
and their precedence live in ``portal.services.rewards``.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm.attributes import set_committed_value

from portal.database import OrderedInsert, stored_as_loaded
from portal.extensions import db
from portal.models import (
    CORRECTION_KINDS,
    Commission,
    CommissionStatus,
    Conversion,
    Program,
    RejectionReason,
)
from portal.models.types import utcnow
from portal.services import rewards
from portal.services.payouts import lines_state
from portal.services.rewards import CommissionDraft, RuleContext, correction, round_half_even

__all__ = [
    "CommissionDraft",
    "PendingLines",
    "commission_summary",
    "compute_commission",
    "correction",
    "earn",
    "net_commission",
    "pending_total",
    "reverse_all",
    "reverse_for_refund",
]


def compute_commission(
    program: Program, conversion: Conversion, context: RuleContext | None = None
) -> list[CommissionDraft]:
    """The lines ``conversion`` earns: one rate line (deal > campaign > product > tier > base)
    plus any campaign bonus lines. ``context`` is loaded from the database when not given."""
    if context is None:
        context = rewards.load_context(conversion)
    return rewards.decide(program, conversion, context)


_LINES = Commission.__table__
# One statement for a batch's lines, their ids in order (``OrderedInsert``).
_LINE_COLUMNS = tuple(column.key for column in _LINES.columns if column.key != "id")
_INSERT_LINES = OrderedInsert(_LINES, _LINE_COLUMNS)


def _insert_lines(rows: list[dict]) -> list[int]:
    return _INSERT_LINES.ids(db.session, rows)


class PendingLines:
    """Commission lines of several stored conversions, inserted together (one statement for
    a batch of sales, ``portal.salewriter``) and then attached to their conversions."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.owners: list[Conversion] = []

    def add(self, conversion: Conversion, rows: list[dict]) -> None:
        self.rows.extend(rows)
        self.owners.extend([conversion] * len(rows))

    def insert(self) -> None:
        ids = _insert_lines(self.rows) if self.rows else []
        for line_id, row, conversion in zip(ids, self.rows, self.owners, strict=True):
            _attach(conversion, [stored_as_loaded(Commission, id=line_id, **row)])
        self.rows, self.owners = [], []


def _attach(conversion: Conversion, lines: list[Commission]) -> None:
    for line in lines:
        set_committed_value(line, "conversion", conversion)
        set_committed_value(line, "payout_item", None)  # new: in no payout (no query to say so)
    set_committed_value(conversion, "commissions", [*conversion.commissions, *lines])


def earn(
    program: Program,
    conversion: Conversion,
    facts: rewards.PartnerFacts | None = None,
    *,
    pending: PendingLines | None = None,
) -> list[Commission]:
    """Write the commission lines of an attributed conversion, pending until the hold ends.

    A conversion that crosses a tier threshold first moves the partner up, so it earns
    the new tier's rate itself. ``facts``: the partner's tier and metrics, when the caller
    read them with the sale's insert (``rewards.TierProbe``). A stored conversion's lines
    take one INSERT … RETURNING id, not the unit of work (the API's hot path); an unsaved
    one's are added to the session with it. ``pending``: leave a stored conversion's lines
    there, inserted later with others' (they are not on the conversion until then).
    """
    upgrade = rewards.upgrade_on_conversion(program, conversion, facts)
    if upgrade is None:
        context = rewards.load_context(conversion)
    else:
        context = rewards.load_context(conversion, tier=upgrade.tier)
    context.tier_just_reached = upgrade is not None and upgrade.change is not None
    now = utcnow()
    # From when the portal received the sale: a client's occurred_at must not shorten the hold.
    confirm_after = (conversion.created_at or now) + timedelta(days=program.hold_period_days)
    rows = []
    for draft in compute_commission(program, conversion, context):
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
    if pending is not None:  # inserted with the rest of the batch's lines (``PendingLines.insert``)
        pending.add(conversion, rows)
        return []
    ids = _insert_lines(rows) if rows else []
    lines = [stored_as_loaded(Commission, id=line_id, **row) for line_id, row in zip(ids, rows, strict=True)]
    _attach(conversion, lines)
    return lines


def net_commission(conversion: Conversion) -> int:
    return sum(line.amount_minor for line in conversion.commissions)


def _earning_lines(conversion: Conversion) -> list[Commission]:
    return [line for line in conversion.commissions if line.kind not in CORRECTION_KINDS]


def _reversed_of(conversion: Conversion, line: Commission) -> int:
    return -sum(c.amount_minor for c in conversion.commissions if c.reverses_id == line.id)


def reverse_for_refund(conversion: Conversion, note: str | None) -> list[Commission]:
    """Reverse, line by line, the share of commission that matches the share of the sale refunded.

    Cumulative per line: after refunds of 30 % and 70 % each line's reversals add up to
    exactly that line, whatever the rounding (half-even) of each step.
    """
    written = []
    for line in _earning_lines(conversion):
        target = (
            round_half_even(line.amount_minor * conversion.refunded_minor, conversion.amount_minor)
            if conversion.amount_minor
            else line.amount_minor
        )
        step = target - _reversed_of(conversion, line)
        if step <= 0:
            continue
        written.append(
            correction(
                line,
                step,
                RejectionReason.REFUND,
                note,
                {
                    "rule": "refund",
                    "refunded_minor": conversion.refunded_minor,
                    "sale_minor": conversion.amount_minor,
                    "earned_minor": line.amount_minor,
                    "reversed_total_minor": target,
                },
            )
        )
        db.session.flush()
    return written


def reverse_all(conversion: Conversion, reason: str, note: str | None) -> list[Commission]:
    """Take back whatever each earning line still holds (a rejected conversion)."""
    written = []
    for line in _earning_lines(conversion):
        left = line.amount_minor - _reversed_of(conversion, line)
        if left <= 0:
            continue
        written.append(
            correction(
                line, left, reason, note, {"rule": "rejected", "reason": reason, "reversed_minor": left}
            )
        )
        db.session.flush()
    return written


def commission_summary(conversion: Conversion, hold: str | None = None) -> dict | None:
    """The commission as the API and pages show it: net amount, state, confirmation date.

    The state is ``payouts.lines_state`` of the lines (pending, confirmed, held, in_payout,
    paid, reversed, clawed_back), the same words the earnings ledger and its CSV use;
    ``hold`` is the partner's ``payouts.hold_of`` when the caller has it.
    """
    lines = conversion.commissions
    if not lines:
        return None
    return {
        "amount_minor": sum(line.amount_minor for line in lines),
        "currency": lines[0].currency,
        "status": str(lines_state(lines, hold) or CommissionStatus.PENDING),
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

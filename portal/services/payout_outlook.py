"""What a partner will be paid next, and when — or why not — for the dashboard and the earnings page.

One decision, read from the payout schedule, the minimum, the payout details, holds and the
balances the payouts service keeps; pages turn it into one sentence
(``portal.formatting.next_payout_sentence``). Returns data, never words.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime

import sqlalchemy as sa

from portal.extensions import db
from portal.models import Partner, PartnerStatus, PayoutBatch, PayoutItem, Program
from portal.models.payouts import HoldReason, ItemStatus
from portal.models.types import utcnow
from portal.services import payouts, schedule


class NextPayoutState(enum.StrEnum):
    SCHEDULED = "scheduled"  # at or above the minimum, details saved: paid on ``on``
    IN_PAYOUT = "in_payout"  # already in a batch being approved or sent
    BELOW_MINIMUM = "below_minimum"  # ``short_minor`` more to reach the minimum
    NO_DETAILS = "no_details"  # enough, but nowhere to send it
    ON_HOLD = "on_hold"  # suspended, or new payout details being checked (``hold``)
    OWED = "owed"  # a clawback after payout is larger than the confirmed balance


@dataclass(frozen=True)
class NextPayout:
    state: NextPayoutState
    amount_minor: int  # what would be paid (or is owed, for OWED)
    currency: str
    on: date | None  # the payout date it concerns
    minimum_minor: int
    short_minor: int = 0  # BELOW_MINIMUM: how much more is needed
    needs_details: bool = False  # no payout details saved yet
    hold: str | None = None  # ON_HOLD: a HoldReason
    then: NextPayout | None = None  # IN_PAYOUT: what the confirmed balance does next


class WithdrawalMissing(enum.StrEnum):
    SUSPENDED = "suspended"
    MINIMUM = "minimum"
    DETAILS = "details"


@dataclass(frozen=True)
class Withdrawal:
    """Early withdrawal: whether the program offers it, and what the partner still lacks."""

    offered: bool
    missing: list[WithdrawalMissing] = field(default_factory=list)
    short_minor: int = 0

    @property
    def available(self) -> bool:
        return self.offered and not self.missing


def _batch_of_pending_item(partner_id: int) -> date | None:
    """The payout date of the batch holding the partner's item that waits to be paid."""
    return db.session.scalar(
        sa.select(PayoutBatch.period_end)
        .join(PayoutItem, PayoutItem.batch_id == PayoutBatch.id)
        .where(PayoutItem.partner_id == partner_id, PayoutItem.status == ItemStatus.PENDING)
        .order_by(PayoutBatch.period_end.desc())
        .limit(1)
    )


def next_payout_date(program: Program, now: datetime) -> date:
    """The program's next payout date: today if today's batch has not been built yet."""
    settled = payouts.scheduled_batch_for(schedule.local_today(program, now)) is not None
    return schedule.upcoming_payout(program, now, settled)


def next_payout_of(
    program: Program,
    partner: Partner,
    now: datetime | None = None,
    figures: payouts.Earnings | None = None,
) -> NextPayout:
    """The partner's next payout: amount and date, or the one reason there is none."""
    now = now or utcnow()
    figures = figures or payouts.earnings_of(partner.id)
    minimum = max(program.minimum_payout_minor, 1)
    has_details = payouts.account_of(partner) is not None
    on = next_payout_date(program, now)
    base = {"currency": program.currency, "minimum_minor": minimum, "needs_details": not has_details}
    confirmed = figures.confirmed
    hold = payouts.hold_of(partner)
    if hold == HoldReason.SUSPENDED:
        return NextPayout(NextPayoutState.ON_HOLD, max(confirmed, 0), on=None, hold=hold, **base)
    if figures.in_payout > 0:
        batch_day = _batch_of_pending_item(partner.id)
        then = _balance_outlook(confirmed, minimum, has_details, hold, on, base) if confirmed else None
        return NextPayout(NextPayoutState.IN_PAYOUT, figures.in_payout, on=batch_day or on, then=then, **base)
    return _balance_outlook(confirmed, minimum, has_details, hold, on, base)


def _balance_outlook(
    confirmed: int, minimum: int, has_details: bool, hold: str | None, on: date, base: dict
) -> NextPayout:
    """What the confirmed balance does on the payout date ``on``."""
    if confirmed < 0:
        return NextPayout(NextPayoutState.OWED, -confirmed, on=on, **base)
    if hold == HoldReason.DETAILS_CHANGED:
        return NextPayout(NextPayoutState.ON_HOLD, confirmed, on=on, hold=hold, **base)
    if confirmed < minimum:
        return NextPayout(
            NextPayoutState.BELOW_MINIMUM, confirmed, on=on, short_minor=minimum - confirmed, **base
        )
    if not has_details:
        return NextPayout(NextPayoutState.NO_DETAILS, confirmed, on=on, **base)
    return NextPayout(NextPayoutState.SCHEDULED, confirmed, on=on, **base)


def withdrawal_of(program: Program, partner: Partner, figures: payouts.Earnings | None = None) -> Withdrawal:
    """Whether the partner may ask for their confirmed balance now, and if not, what is missing.

    The same conditions ``payouts.request_withdrawal`` enforces.
    """
    if not program.allow_withdrawals:
        return Withdrawal(offered=False)
    figures = figures or payouts.earnings_of(partner.id)
    minimum = max(program.minimum_payout_minor, 1)
    missing: list[WithdrawalMissing] = []
    if partner.status == PartnerStatus.SUSPENDED:
        missing.append(WithdrawalMissing.SUSPENDED)
    if figures.confirmed < minimum:
        missing.append(WithdrawalMissing.MINIMUM)
    if payouts.account_of(partner) is None:
        missing.append(WithdrawalMissing.DETAILS)
    return Withdrawal(offered=True, missing=missing, short_minor=max(minimum - figures.confirmed, 0))

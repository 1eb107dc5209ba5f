"""The base commission and its reversal on refunds: integer arithmetic, half-even, no cent lost or made."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from hypothesis import given
from hypothesis import strategies as st

from portal.models import CommissionType, Conversion, Program
from portal.models.types import utcnow
from portal.services.commissions import compute_commission
from portal.services.rewards import RuleContext, round_half_even


def program(**kw) -> Program:
    defaults = {
        "commission_type": CommissionType.PERCENT,
        "commission_percent_bp": 1000,
        "commission_flat_minor": 0,
        "hold_period_days": 30,
        "currency": "USD",
    }
    return Program(**(defaults | kw))


def conversion(amount: int) -> Conversion:
    return Conversion(amount_minor=amount, currency="USD", occurred_at=utcnow(), refunded_minor=0)


@pytest.mark.parametrize(
    ("amount", "bp", "expected"),
    [
        (4990, 1000, 499),
        (4995, 1000, 500),  # 499.5 → 500 (even)
        (4985, 1000, 498),  # 498.5 → 498 (even): half-up would say 499
        (4994, 1000, 499),
        (1, 1000, 0),
        (5, 1000, 0),  # 0.5 → 0 (even)
        (15, 1000, 2),  # 1.5 → 2 (even)
        (10000, 1250, 1250),
    ],
)
def test_percent_commission_rounds_half_even(amount, bp, expected):
    draft = compute_commission(program(commission_percent_bp=bp), conversion(amount), RuleContext())[0]
    assert draft.amount_minor == expected
    assert draft.explanation == {
        "rule": "base",
        "type": "percent",
        "rate_bp": bp,
        "sale_minor": amount,
        "result_minor": expected,
    }


def test_flat_commission():
    draft = compute_commission(
        program(commission_type="flat", commission_flat_minor=750), conversion(4990), RuleContext()
    )[0]
    assert draft.amount_minor == 750


@given(
    earned=st.integers(min_value=0, max_value=10**9),
    amount=st.integers(min_value=1, max_value=10**9),
    refunds=st.lists(st.integers(min_value=1, max_value=100), min_size=1, max_size=6),
)
def test_partial_refund_reversals_add_up_to_exactly_the_earned_amount(earned, amount, refunds):
    """Whatever the steps, reversing the refunded share never overshoots and ends at exactly zero."""
    total_weight = sum(refunds)
    refunded = 0
    reversed_so_far = 0
    for i, weight in enumerate(refunds):
        step = amount - refunded if i == len(refunds) - 1 else amount * weight // total_weight
        refunded = min(amount, refunded + step)
        target = round_half_even(earned * refunded, amount)
        assert target >= reversed_so_far
        reversed_so_far = target
        assert 0 <= reversed_so_far <= earned
    assert reversed_so_far == earned


def test_hold_period_sets_confirm_after(app, db):
    from portal.services.commissions import earn
    from tests.factories import PartnerFactory

    partner = PartnerFactory()
    prog = program(hold_period_days=14)
    received = datetime(2026, 12, 2, 12, tzinfo=UTC)
    with time_machine.travel(received, tick=False):
        conv = conversion(1000)
        conv.occurred_at = received - timedelta(days=10)  # a client's date shortens nothing
        conv.partner_id = partner.id
        (line,) = earn(prog, conv)
    assert line.confirm_after == received + timedelta(days=14)
    assert line.status == "pending"

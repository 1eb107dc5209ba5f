"""Audit of the tier upgrade on each sale: the windows a sale may upgrade from."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from portal.models import ExchangeRate, PartnerDailyStat, RejectionReason
from portal.models.types import utcnow
from portal.services import rewards, tracking
from portal.services.tracking import ConversionInput
from tests.factories import UserFactory
from tests.unit.test_rewards import berlin, only_rate_line, partner, program, sale, tier  # noqa: F401

pytestmark = pytest.mark.postgres  # the counters are read by one statement on each database


def test_a_sale_does_not_count_itself_in_the_previous_month(db, program, partner):  # noqa: F811
    """A calendar-month tier may upgrade from the previous full month; a sale of this month
    is not one of last month's, so it must not lift last month over the threshold."""
    silver = tier(db, name="Silver", threshold=3, period="previous_month")
    sale(program, partner, at=berlin(2026, 10, 20, 12))
    sale(program, partner, at=berlin(2026, 10, 21, 12))  # October: 2, below Silver's 3
    assert rewards.current_tier(partner.id) is None

    november = sale(program, partner, at=berlin(2026, 11, 5, 12))  # November so far: 1
    line = only_rate_line(november)
    assert (line.kind, line.amount_minor) == ("base", 1000)
    assert rewards.current_tier(partner.id) is None
    assert rewards.tier_history(partner.id) == []
    # The month close agrees: October was below the threshold.
    assert rewards.close_month(program, "2026-10", now=datetime(2026, 11, 6, tzinfo=UTC)).upgrades == 0
    assert rewards.current_tier(partner.id) is None
    assert silver.id is not None


def test_a_sale_upgrades_from_a_previous_month_that_reached_the_threshold(db, program, partner):  # noqa: F811
    silver = tier(db, name="Silver", threshold=3, period="previous_month")
    sale(program, partner, at=berlin(2026, 10, 20, 12))
    sale(program, partner, at=berlin(2026, 10, 21, 12))
    # The threshold is lowered after October's sale: November's first sale finds October reached it.
    silver.threshold_value = 2
    db.session.flush()
    november = sale(program, partner, at=berlin(2026, 11, 5, 12))
    line = only_rate_line(november)
    assert (line.kind, line.explanation["tier"]) == ("tier", "Silver")
    (change,) = rewards.tier_history(partner.id)
    assert (change.window, change.metric_value) == ("2026-10", 2)


def _foreign_sale(in_program, by, tx, at):
    conversion, created = tracking.record_conversion(
        in_program,
        ConversionInput(
            transaction_id=tx, amount_minor=50_000, currency="JPY", ref=by.ref_code, occurred_at=at
        ),
        {"tx": tx},
        received_at=at,
    )
    assert created
    return conversion


def test_a_sale_waiting_for_its_exchange_rate_does_not_count_for_a_tier(db, program, partner):  # noqa: F811
    """A sale held for its exchange rate has not been accepted yet: like one held for review
    it must not lift its partner into a tier (it may never count: refunded in full meanwhile)."""
    tier(db, name="Silver", threshold=2, period="rolling_30")
    held = _foreign_sale(program, partner, "jpy-1", berlin(2026, 11, 9, 12))
    assert held.status == "held"
    line = only_rate_line(sale(program, partner, at=berlin(2026, 11, 10, 12)))
    assert (line.kind, line.amount_minor) == ("base", 1000)
    assert rewards.current_tier(partner.id) is None


def _rate_arrives(db, program, day):  # noqa: F811
    """The yen's rate for ``day`` (¥50,000 is $330.00), and the waiting sales converted."""
    db.session.add(
        ExchangeRate(base="JPY", quote="USD", day=day, rate="0.0066", source="ecb", created_at=utcnow())
    )
    db.session.flush()
    return tracking.convert_waiting(program)


def _accepted_in_counters(db, partner_id: int) -> int:
    """What the tier probe reads as the partner's accepted conversions (all days)."""
    return db.session.scalar(
        sa.select(sa.func.sum(rewards._COUNTED["conversions"])).where(
            PartnerDailyStat.partner_id == partner_id
        )
    )


def test_a_held_sale_counts_once_for_a_tier_when_its_rate_arrives(db, program, partner):  # noqa: F811
    """Converted, the sale is accepted and counts (once: the counters do not hold it already)."""
    tier(db, name="Silver", threshold=3, period="rolling_30")
    sale(program, partner, at=berlin(2026, 11, 9, 10))
    held = _foreign_sale(program, partner, "jpy-1", berlin(2026, 11, 9, 12))
    assert _accepted_in_counters(db, partner.id) == 1

    assert _rate_arrives(db, program, held.occurred_at.date()) == 1
    assert held.status == "pending"
    line = only_rate_line(held)
    assert (line.kind, line.amount_minor) == ("base", 3_300)  # 2 accepted, below Silver's 3
    assert rewards.current_tier(partner.id) is None
    assert _accepted_in_counters(db, partner.id) == 2

    third = sale(program, partner, at=berlin(2026, 11, 10, 12))
    assert (only_rate_line(third).kind, only_rate_line(third).explanation["tier"]) == ("tier", "Silver")
    (change,) = rewards.tier_history(partner.id)
    assert (change.conversion_id, change.metric_value) == (third.id, 3)


def test_the_sale_whose_rate_arrives_upgrades_its_partner_as_a_new_sale_would(db, program, partner):  # noqa: F811
    """Held, it does not count; converted, it is the third accepted sale of its window: it moves
    its partner up at once and itself earns the new rate, as a sale crossing the threshold does."""
    tier(db, name="Silver", threshold=3, period="rolling_30")
    sale(program, partner, at=berlin(2026, 11, 9, 10))
    held = _foreign_sale(program, partner, "jpy-1", berlin(2026, 11, 9, 12))
    second = sale(program, partner, at=berlin(2026, 11, 9, 14))
    assert (only_rate_line(second).kind, only_rate_line(second).amount_minor) == ("base", 1000)
    assert rewards.current_tier(partner.id) is None

    _rate_arrives(db, program, held.occurred_at.date())
    line = only_rate_line(held)
    assert (line.kind, line.explanation["tier"], line.amount_minor) == ("tier", "Silver", 4_950)
    assert rewards.current_tier(partner.id).name == "Silver"
    (change,) = rewards.tier_history(partner.id)
    assert (change.conversion_id, change.metric_value, change.window) == (held.id, 3, "30d")


def _reject_held(program, conversion, how):  # noqa: F811
    if how == "refund":
        tracking.refund_conversion(conversion, None, "returned before its rate arrived")
    elif how == "reject":
        tracking.reject_conversion(conversion, UserFactory(), RejectionReason.FRAUD_RISK, None)
    else:  # above the maximum once converted: rejected when its rate arrives
        program.max_sale_minor = 20_000


@pytest.mark.parametrize("how", ["refund", "reject", "above_maximum"])
def test_a_held_sale_that_ends_rejected_never_counts_for_a_tier(db, program, partner, how):  # noqa: F811
    tier(db, name="Silver", threshold=2, period="rolling_30")
    held = _foreign_sale(program, partner, "jpy-1", berlin(2026, 11, 9, 12))
    first = sale(program, partner, at=berlin(2026, 11, 9, 14))
    assert only_rate_line(first).kind == "base"  # the held sale does not count while held
    assert rewards.current_tier(partner.id) is None

    _reject_held(program, held, how)
    _rate_arrives(db, program, held.occurred_at.date())
    assert held.status == "rejected"
    assert held.commissions == []
    assert _accepted_in_counters(db, partner.id) == 1
    assert rewards.current_tier(partner.id) is None

    second = sale(program, partner, at=berlin(2026, 11, 10, 12))  # the second accepted sale
    assert only_rate_line(second).kind == "tier"
    (change,) = rewards.tier_history(partner.id)
    assert (change.conversion_id, change.metric_value) == (second.id, 2)

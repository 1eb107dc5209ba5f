"""Audit of the tier upgrade on each sale: the windows a sale may upgrade from."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from portal.services import rewards, tracking
from portal.services.tracking import ConversionInput
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

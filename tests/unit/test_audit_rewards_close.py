"""Audit: the month close judges a rolling tier on whole days in the program's zone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from portal.services import rewards
from tests.unit.test_rewards import berlin, partner, program, put_in_tier, sale, tier  # noqa: F401

pytestmark = pytest.mark.postgres


def test_a_rolling_close_window_starts_at_midnight_across_a_dst_change(db, program, partner):  # noqa: F811
    """October 2026 ends in winter time (Berlin went back an hour on 25 October): the 30 days
    to its end are 2 to 31 October, from midnight, not from 01:00 on the 2nd."""
    silver = tier(db, name="Silver", threshold=1, period="rolling_30")
    put_in_tier(db, partner, silver, since=datetime(2026, 9, 1, tzinfo=UTC))
    sale(program, partner, at=berlin(2026, 10, 2, 0, 30))  # the first of the 30 days

    start, end = rewards.close_window(silver, "2026-10", rewards.zone(program))
    assert (start, end) == (berlin(2026, 10, 2), berlin(2026, 11, 1))
    report = rewards.close_month(program, "2026-10", now=datetime(2026, 11, 1, 1, tzinfo=UTC))
    assert report.downgrades == 0
    assert rewards.current_tier(partner.id) == silver


def test_a_rolling_close_window_does_not_reach_into_the_day_before(db, program, partner):  # noqa: F811
    """March 2026 ends in summer time: the 30 days to its end are 2 to 31 March; a sale late
    on 1 March is outside them."""
    silver = tier(db, name="Silver", threshold=1, period="rolling_30")
    put_in_tier(db, partner, silver, since=datetime(2026, 1, 1, tzinfo=UTC))
    sale(program, partner, at=berlin(2026, 3, 1, 23, 30))

    start, end = rewards.close_window(silver, "2026-03", rewards.zone(program))
    assert (start, end) == (berlin(2026, 3, 2), berlin(2026, 4, 1))
    assert rewards.close_month(program, "2026-03", now=datetime(2026, 4, 1, 1, tzinfo=UTC)).downgrades == 1

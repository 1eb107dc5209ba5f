"""Payout date arithmetic: month ends, leap years, weekdays, fortnights, time zones."""

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal.models import Program
from portal.services.schedule import (
    last_payout_date,
    local_today,
    next_payout_date,
    previous_payout_date,
    start_of_day_utc,
    upcoming_payout,
)


@pytest.mark.parametrize(
    ("day", "on", "expected"),
    [
        (15, date(2026, 11, 24), date(2026, 11, 15)),
        (15, date(2026, 11, 15), date(2026, 11, 15)),
        (15, date(2026, 11, 14), date(2026, 10, 15)),
        (15, date(2026, 1, 3), date(2025, 12, 15)),  # across the year
        (28, date(2024, 2, 29), date(2024, 2, 28)),  # leap day
        (28, date(2023, 3, 1), date(2023, 2, 28)),
        (1, date(2024, 3, 1), date(2024, 3, 1)),
        (28, date(2025, 2, 27), date(2025, 1, 28)),
    ],
)
def test_monthly_last_payout_date(day, on, expected):
    assert last_payout_date("monthly", day, on) == expected


@pytest.mark.parametrize(
    ("day", "after", "expected"),
    [
        (15, date(2026, 11, 24), date(2026, 12, 15)),
        (15, date(2026, 12, 15), date(2027, 1, 15)),
        (28, date(2024, 1, 31), date(2024, 2, 28)),
        (28, date(2024, 2, 28), date(2024, 3, 28)),
        (1, date(2024, 2, 29), date(2024, 3, 1)),
    ],
)
def test_monthly_next_payout_date(day, after, expected):
    assert next_payout_date("monthly", day, after) == expected


def test_weekly():
    # 2026-11-24 is a Tuesday; payouts on Fridays (4)
    assert last_payout_date("weekly", 4, date(2026, 11, 24)) == date(2026, 11, 20)
    assert next_payout_date("weekly", 4, date(2026, 11, 24)) == date(2026, 11, 27)
    assert next_payout_date("weekly", 4, date(2026, 11, 27)) == date(2026, 12, 4)
    assert last_payout_date("weekly", 1, date(2026, 11, 24)) == date(2026, 11, 24)


def test_biweekly_counts_fortnights_from_a_fixed_anchor():
    first = last_payout_date("biweekly", 0, date(2024, 1, 1))
    assert first == date(2024, 1, 1)
    assert last_payout_date("biweekly", 0, date(2024, 1, 14)) == date(2024, 1, 1)
    assert last_payout_date("biweekly", 0, date(2024, 1, 15)) == date(2024, 1, 15)
    assert next_payout_date("biweekly", 0, date(2024, 1, 1)) == date(2024, 1, 15)


@given(
    schedule=st.sampled_from(["monthly", "weekly", "biweekly"]),
    day=st.integers(min_value=0, max_value=28),
    on=st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 12, 31)),
)
def test_schedule_properties(schedule, day, on):
    if schedule == "monthly":
        day = max(day, 1)
    else:
        day %= 7
    last = last_payout_date(schedule, day, on)
    following = next_payout_date(schedule, day, on)
    assert last <= on < following
    assert last_payout_date(schedule, day, last) == last  # a payout date is its own last
    assert next_payout_date(schedule, day, last) == following
    assert previous_payout_date(schedule, day, last) < last
    gap = (following - last).days
    if schedule == "weekly":
        assert gap == 7
    elif schedule == "biweekly":
        assert gap == 14
    else:
        assert 28 <= gap <= 31
        assert last.day == day


def test_time_zone_decides_the_day():
    program = Program(timezone="Pacific/Auckland", payout_schedule="monthly", payout_day=15)
    # 14 Nov 12:30 UTC is already 15 Nov in Auckland
    now = datetime(2026, 11, 14, 12, 30, tzinfo=UTC)
    assert local_today(program, now) == date(2026, 11, 15)
    assert upcoming_payout(program, now, settled=False) == date(2026, 11, 15)
    assert upcoming_payout(program, now, settled=True) == date(2026, 12, 15)
    cutoff = start_of_day_utc(program, date(2026, 11, 15))
    assert cutoff == datetime(2026, 11, 14, 11, 0, tzinfo=UTC)  # NZDT is UTC+13
    program.timezone = "America/New_York"
    assert start_of_day_utc(program, date(2026, 3, 8)) == datetime(2026, 3, 8, 5, 0, tzinfo=UTC)
    assert start_of_day_utc(program, date(2026, 3, 9)) - start_of_day_utc(
        program, date(2026, 3, 8)
    ) == timedelta(hours=23)  # the spring-forward day is 23 hours long

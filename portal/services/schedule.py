"""Payout dates from the program's schedule, in the program's time zone.

- monthly: day N (1-28, so every month has it) of each month;
- weekly: every given weekday;
- every two weeks: the given weekday of every second ISO week, counted from
  the week of 2024-01-01, so every install agrees on which weeks they are.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from portal.models import PayoutSchedule, Program

_BIWEEKLY_ANCHOR = date(2024, 1, 1)  # a Monday


def _month_back(day: date, months: int = 1) -> date:
    year, month = divmod(day.year * 12 + day.month - 1 - months, 12)
    return date(year, month + 1, day.day)


def last_payout_date(schedule: str, payout_day: int, on_or_before: date) -> date:
    """The latest payout date that is ``on_or_before`` the given date."""
    if schedule == PayoutSchedule.MONTHLY:
        candidate = on_or_before.replace(day=payout_day)
        return candidate if candidate <= on_or_before else _month_back(candidate)
    back = (on_or_before.weekday() - payout_day) % 7
    candidate = on_or_before - timedelta(days=back)
    if schedule == PayoutSchedule.BIWEEKLY:
        anchor = _BIWEEKLY_ANCHOR + timedelta(days=payout_day)
        if (candidate - anchor).days % 14:
            candidate -= timedelta(days=7)
    return candidate


def previous_payout_date(schedule: str, payout_day: int, payout_date: date) -> date:
    """The payout date before ``payout_date`` (the start of its period)."""
    return last_payout_date(schedule, payout_day, payout_date - timedelta(days=1))


def next_payout_date(schedule: str, payout_day: int, after: date) -> date:
    """The first payout date strictly after ``after``."""
    if schedule == PayoutSchedule.MONTHLY:
        candidate = after.replace(day=payout_day)
        if candidate <= after:
            year, month = divmod(after.year * 12 + after.month, 12)
            candidate = date(year, month + 1, payout_day)
        return candidate
    step = 14 if schedule == PayoutSchedule.BIWEEKLY else 7
    last = last_payout_date(schedule, payout_day, after)
    return last + timedelta(days=step)


def local_today(program: Program, now: datetime) -> date:
    return now.astimezone(ZoneInfo(program.timezone)).date()


def start_of_day_utc(program: Program, day: date) -> datetime:
    """Midnight of ``day`` in the program's zone, as a UTC instant."""
    return datetime.combine(day, time.min, tzinfo=ZoneInfo(program.timezone)).astimezone(UTC)


def upcoming_payout(program: Program, now: datetime, settled: bool) -> date:
    """The date a partner will next be paid: today if today is a payout date not yet settled."""
    today = local_today(program, now)
    last = last_payout_date(program.payout_schedule, program.payout_day, today)
    if last == today and not settled:
        return today
    return next_payout_date(program.payout_schedule, program.payout_day, today)

"""Presentation: money, percents, dates, channel and reason labels in the reader's language.

The one place values become words. Templates (``portal.templating`` registers these as
filters), automatic messages, CSV exports and services that must write a sentence all use
it; it needs only Babel (through Flask-Babel, for the reader's locale and zone) and
``portal.money``, so anything may import it without climbing back up the house.

Rates are printed one way everywhere: a percent with up to two decimals and no trailing
zeros (1250 basis points → "12.5%", 1000 → "10%", 5 → "0.05%").
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache

from babel import Locale
from babel.dates import format_date as babel_format_date
from babel.dates import format_skeleton
from babel.numbers import get_group_symbol
from flask_babel import format_date, format_datetime, format_decimal, format_percent, get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from portal.money import format_money

# One pattern for every rate the portal prints: up to two decimals, no trailing zeros.
RATE_PATTERN = "#,##0.##%"

CHANNEL_LABELS = {
    "seo": _l("SEO / content site"),
    "social": _l("Social media"),
    "ads": _l("Paid ads"),
    "email": _l("E-mail newsletter"),
    "video": _l("Video"),
    "other": _l("Other"),
}


def _locale() -> str:
    return str(get_locale() or "en")


def money(minor: int | None, currency: str, locale: str | None = None) -> str:
    """Minor units in the reader's language: (4990, "USD") → "$49.90"; None → "—"."""
    if minor is None:
        return "—"
    return _money(minor, currency, locale or _locale())


# Dashboards format hundreds of numbers, dates and amounts per page; each is a pure
# function of its inputs and the locale, so the formatted text is remembered.
@lru_cache(maxsize=8192)
def _money(minor: int, currency: str, locale: str) -> str:
    return format_money(minor, currency, locale=locale)


@lru_cache(maxsize=32)
def _thousands_separator(locale: str) -> str | None:
    """The locale's group symbol if it groups integers by threes (most do), else None."""
    pattern = Locale.parse(locale).decimal_formats.get(None)
    if pattern is None or pattern.grouping != (3, 3):
        return None
    return get_group_symbol(locale)


def number(value: int | float | None) -> str:
    """A count with the viewer's thousands separators: 12345 → "12,345"."""
    if value is None:
        return "—"
    if isinstance(value, int) and not isinstance(value, bool):
        separator = _thousands_separator(_locale())
        if separator is not None:
            return f"{value:,}".replace(",", separator)
    return format_decimal(value)


def percent_bp(basis_points: int) -> str:
    """Hundredths of a percent as a percent: 1250 → "12.5%" (through ``rate``, the one printer)."""
    return rate(Decimal(basis_points) / 10000)


def rate(fraction: Decimal | None) -> str:
    """A share as a percent, printed like every rate: 0.0525 → "5.25%"; None → "—"."""
    if fraction is None:
        return "—"
    return format_percent(fraction, RATE_PATTERN)


def day(value, format: str = "medium") -> str:  # noqa: A002 - Babel's own name
    """A calendar date (payout dates, dashboard days), in the viewer's language.

    ``"short"`` is day and month only ("Dec 1"), for chart axes and bar tips.
    """
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return format_date(value, format)  # an instant: shown on the viewer's calendar
    return _day(value, format, _locale())


@lru_cache(maxsize=4096)
def _day(value: date, format: str, locale: str) -> str:  # noqa: A002
    if format == "short":
        return format_skeleton("MMMd", value, locale=locale)
    return babel_format_date(value, format, locale=locale)


def when(value, format: str = "medium") -> str:  # noqa: A002 - Babel's own name
    """An instant in the viewer's zone and language."""
    if value is None:
        return "—"
    return format_datetime(value, format)


def channel_label(code: str) -> str:
    """A promotion channel in words: "seo" → "SEO / content site"."""
    label = CHANNEL_LABELS.get(code)
    return str(label) if label is not None else code


def channel_labels(codes: list[str]) -> str:
    return ", ".join(channel_label(c) for c in codes)


def reason_label(code: str | None) -> str:
    """A rejection reason in plain words."""
    return {
        "refund": _("the order was refunded"),
        "duplicate": _("a duplicate of another order"),
        "fraud_risk": _("flagged as a fraud risk"),
        "self_referral": _("a purchase by the partner themself (self-referral)"),
        "test_order": _("a test order"),
        "out_of_window": _("made after the cookie window had closed"),
        "other": _("another reason (see the note)"),
    }.get(code, code or "")


def next_payout_sentence(outlook) -> str:
    """A partner's next payout in one sentence (``payout_outlook.NextPayout``): the amount and
    the date, or why there is none. The dashboard and the earnings page both print this."""
    amount = money(outlook.amount_minor, outlook.currency)
    on = day(outlook.on, "long") if outlook.on else None
    state = str(outlook.state)
    if state == "scheduled":
        return _("%(amount)s on %(date)s.", amount=amount, date=on)
    if state == "in_payout":
        return _("%(amount)s is on its way in the payout of %(date)s.", amount=amount, date=on)
    if state == "below_minimum":
        short = money(outlook.short_minor, outlook.currency)
        minimum = money(outlook.minimum_minor, outlook.currency)
        if outlook.needs_details:
            return _(
                "None on %(date)s: %(short)s more to reach the %(minimum)s minimum, and add your payout details.",  # noqa: E501
                date=on,
                short=short,
                minimum=minimum,
            )
        return _(
            "None on %(date)s: %(short)s more to reach the %(minimum)s minimum.",
            date=on,
            short=short,
            minimum=minimum,
        )
    if state == "no_details":
        return _(
            "None on %(date)s: add your payout details to be paid your %(amount)s.", date=on, amount=amount
        )
    if state == "owed":
        return _(
            "None on %(date)s: you owe %(amount)s from a refund after a payout, netted from your next earnings.",  # noqa: E501
            date=on,
            amount=amount,
        )
    if outlook.hold == "suspended":
        return _(
            "On hold: your account is suspended; your %(amount)s is paid once it is reinstated.",
            amount=amount,
        )
    return _(
        "On hold: the program team is checking your new payout details; your %(amount)s is paid on %(date)s once they have.",  # noqa: E501
        amount=amount,
        date=on,
    )

"""Jinja filters and globals: the one place money, dates and statuses are formatted."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

from babel import Locale
from babel.dates import format_date as babel_format_date
from babel.numbers import get_group_symbol
from flask import Flask, request
from flask_babel import format_datetime, format_decimal, format_percent, get_locale
from flask_babel import gettext as _
from flask_wtf.csrf import generate_csrf

from portal.charts import bar_chart
from portal.models import CommissionType, PartnerStatus
from portal.money import format_money
from portal.realtime import room_for


def money(minor: int | None, currency: str) -> str:
    if minor is None:
        return "—"
    return _money(minor, currency, str(get_locale()))


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


def percent_bp(basis_points: int) -> str:
    """Hundredths of a percent as a percent: 1250 → "12.5%"."""
    return format_percent(Decimal(basis_points) / 10000, "#,##0.##%")


def base_commission(program) -> str:
    if program.commission_type == CommissionType.PERCENT:
        return _("%(rate)s of each sale", rate=percent_bp(program.commission_percent_bp))
    return _("%(amount)s per sale", amount=money(program.commission_flat_minor, program.currency))


def channel_label(code: str) -> str:
    from portal.forms import channel_choices

    return next((str(c.label) for c in channel_choices() if c.value == code), code)


def channel_labels(codes: list[str]) -> str:
    return ", ".join(channel_label(c) for c in codes)


def country_name(code: str | None) -> str:
    if not code:
        return "—"
    return get_locale().territories.get(code, code)


def number(value: int | float | None) -> str:
    """A count with the viewer's thousands separators: 12345 → "12,345"."""
    if value is None:
        return "—"
    if isinstance(value, int) and not isinstance(value, bool):
        separator = _thousands_separator(str(get_locale()))
        if separator is not None:
            return f"{value:,}".replace(",", separator)
    return format_decimal(value)


def rate(value: Decimal | None) -> str:
    """A share as a percent with one decimal: 0.0312 → "3.1%"; "—" when there is nothing to divide."""
    if value is None:
        return "—"
    return format_percent(value, "#,##0.0%")


def day(value, format: str = "medium") -> str:  # noqa: A002 - Babel's own name
    """A calendar day (already in the program's zone, so never shifted)."""
    if value is None:
        return "—"
    return _day(value, {"short": "d MMM", "medium": "d MMM yyyy"}.get(format, format), str(get_locale()))


@lru_cache(maxsize=4096)
def _day(value, pattern: str, locale: str) -> str:
    return babel_format_date(value, pattern, locale=locale)


def dimension_label(dimension: str) -> str:
    from portal.services.dashboards import dimension_label as label

    return label(dimension)


def risk_label(reason: str) -> str:
    from portal.services.dashboards import risk_label as label

    return label(reason)


def when(value, format: str = "medium") -> str:  # noqa: A002 - Babel's own name
    if value is None:
        return "—"
    return format_datetime(value, format)


# Every status is shown as a word and an icon, never by colour alone.
_STATUS_ICONS = {
    "partner": {
        PartnerStatus.APPLIED: ("◷", "pending"),
        PartnerStatus.APPROVED: ("✔", "good"),
        PartnerStatus.REJECTED: ("✖", "bad"),
        PartnerStatus.SUSPENDED: ("‖", "warn"),
    },
    "conversion": {
        "pending": ("◷", "pending"),
        "review": ("⚑", "warn"),
        "rejected": ("✖", "bad"),
    },
    "commission": {
        "pending": ("◷", "pending"),
        "confirmed": ("✔", "good"),
        "reversed": ("↩", "bad"),
    },
}


def _status_label(kind: str, status: str) -> str:
    if kind == "partner":
        from portal.services.accounts import partner_status_label

        return partner_status_label(status)
    return {
        ("conversion", "pending"): _("counted — commission pending"),
        ("conversion", "review"): _("under review"),
        ("conversion", "rejected"): _("rejected"),
        ("commission", "pending"): _("pending"),
        ("commission", "confirmed"): _("confirmed"),
        ("commission", "reversed"): _("reversed"),
    }.get((kind, status), status)


def status_badge_parts(status: str, kind: str = "partner") -> tuple[str, str, str]:
    icon, tone = _STATUS_ICONS.get(kind, {}).get(status, ("•", "neutral"))
    return icon, tone, _status_label(kind, status)


def init_app(app: Flask) -> None:
    app.add_template_filter(money, "money")
    app.add_template_filter(when, "when")
    app.add_template_filter(number, "number")
    app.add_template_filter(rate, "rate")
    app.add_template_filter(day, "day")
    app.add_template_filter(percent_bp, "percent_bp")
    app.add_template_filter(channel_label, "channel")
    app.add_template_filter(channel_labels, "channels")
    app.add_template_filter(country_name, "country")
    app.add_template_global(base_commission)
    app.add_template_global(bar_chart)
    app.add_template_global(dimension_label)
    app.add_template_global(risk_label)
    app.add_template_global(get_locale)
    app.add_template_global(room_for, "live_room")
    app.add_template_global(status_badge_parts)
    app.add_template_global(generate_csrf, "csrf_token")

    @app.context_processor
    def inject_common():
        return {"is_htmx": bool(getattr(request, "htmx", False))}

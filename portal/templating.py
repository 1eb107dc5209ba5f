"""Jinja filters and globals: the one place money, dates and statuses are formatted."""

from __future__ import annotations

from decimal import Decimal

from flask import Flask, request
from flask_babel import format_datetime, format_percent, get_locale
from flask_babel import gettext as _
from flask_wtf.csrf import generate_csrf

from portal.models import CommissionType, PartnerStatus
from portal.money import format_money


def money(minor: int | None, currency: str) -> str:
    if minor is None:
        return "—"
    return format_money(minor, currency, locale=str(get_locale()))


def percent_bp(basis_points: int) -> str:
    """Hundredths of a percent as a percent: 1250 → "12.5%"."""
    return format_percent(Decimal(basis_points) / 10000, "#,##0.##%")


def base_commission(program) -> str:
    if program.commission_type == CommissionType.PERCENT:
        return _("%(rate)s of each sale", rate=percent_bp(program.commission_percent_bp))
    return _("%(amount)s per sale", amount=money(program.commission_flat_minor, program.currency))


def when(value, format: str = "medium") -> str:  # noqa: A002 - Babel's own name
    if value is None:
        return "—"
    return format_datetime(value, format)


# Every status is shown as a word and an icon, never by colour alone.
_STATUS_ICONS = {
    PartnerStatus.APPLIED: ("⏳", "pending"),
    PartnerStatus.APPROVED: ("✔", "good"),
    PartnerStatus.REJECTED: ("✖", "bad"),
    PartnerStatus.SUSPENDED: ("⏸", "warn"),
}


def status_badge_parts(status: str) -> tuple[str, str, str]:
    from portal.services.accounts import partner_status_label

    icon, tone = _STATUS_ICONS.get(status, ("•", "neutral"))
    return icon, tone, partner_status_label(status)


def init_app(app: Flask) -> None:
    app.add_template_filter(money, "money")
    app.add_template_filter(when, "when")
    app.add_template_filter(percent_bp, "percent_bp")
    app.add_template_global(base_commission)
    app.add_template_global(get_locale)
    app.add_template_global(status_badge_parts)
    app.add_template_global(generate_csrf, "csrf_token")

    @app.context_processor
    def inject_common():
        return {"is_htmx": bool(getattr(request, "htmx", False))}

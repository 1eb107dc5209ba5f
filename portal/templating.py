"""Jinja filters and globals: registers ``portal.formatting`` as filters, plus page-only helpers
(status badges, file URLs, the unread badge). Services never import this module."""

from __future__ import annotations

import re

from flask import Flask, has_request_context, request
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_wtf.csrf import generate_csrf

from portal.charts import bar_chart
from portal.formatting import (
    channel_label,
    channel_labels,
    day,
    money,
    next_payout_sentence,
    number,
    percent_bp,
    rate,
    reason_label,
    when,
)
from portal.i18n import html_lang, locale_choices
from portal.models import CommissionType, PartnerStatus
from portal.navigation import main_nav
from portal.realtime import room_for

# Re-exported for templates' callers that still import them from here.
__all__ = ["channel_label", "channel_labels", "day", "money", "number", "percent_bp", "rate", "when"]


def base_commission(program) -> str:
    if program.commission_type == CommissionType.PERCENT:
        return _("%(rate)s of each sale", rate=percent_bp(program.commission_percent_bp))
    return _("%(amount)s per sale", amount=money(program.commission_flat_minor, program.currency))


def host(url: str | None) -> str:
    """Where an address opens, without the rest: "https://shop.example/tents" → "shop.example"."""
    from urllib.parse import urlsplit

    return (urlsplit(url or "").hostname or "").removeprefix("www.") or "—"


def country_name(code: str | None) -> str:
    if not code:
        return "—"
    return get_locale().territories.get(code, code)


def dimension_label(dimension: str) -> str:
    from portal.services.dashboards import dimension_label as label

    return label(dimension)


def risk_label(reason: str) -> str:
    from portal.services.dashboards import risk_label as label

    return label(reason)


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
        "held": ("‖", "warn"),
    },
    "announcement": {
        "draft": ("✎", "neutral"),
        "scheduled": ("◷", "pending"),
        "published": ("✔", "good"),
    },
    "switch": {
        "on": ("✔", "good"),
        "off": ("‖", "neutral"),
    },
    # A commission line's or conversion's state (payouts.LineState).
    "commission": {
        "pending": ("◷", "pending"),
        "confirmed": ("✔", "good"),
        "held": ("‖", "warn"),
        "in_payout": ("➜", "pending"),
        "paid": ("✔", "good"),
        "reversed": ("↩", "bad"),
        "clawed_back": ("↩", "warn"),
    },
    "creative": {
        "draft": ("✎", "pending"),
        "published": ("✔", "good"),
        "archived": ("‖", "neutral"),
    },
}


def _status_label(kind: str, status: str) -> str:
    if kind == "partner":
        from portal.services.accounts import partner_status_label

        return partner_status_label(status)
    if kind == "creative":
        from portal.services.creatives import status_label

        return status_label(status)
    return {
        ("conversion", "pending"): _("counted"),
        ("conversion", "review"): _("under review"),
        ("conversion", "rejected"): _("rejected"),
        ("conversion", "held"): _("waiting for an exchange rate"),
        ("commission", "pending"): _("pending"),
        ("commission", "confirmed"): _("confirmed"),
        ("commission", "held"): _("held"),
        ("commission", "in_payout"): _("in payout"),
        ("commission", "paid"): _("paid"),
        ("commission", "reversed"): _("reversed"),
        ("commission", "clawed_back"): _("clawed back"),
        ("announcement", "draft"): _("draft"),
        ("announcement", "scheduled"): _("scheduled"),
        ("announcement", "published"): _("published"),
        ("switch", "on"): _("on"),
        ("switch", "off"): _("off"),
    }.get((kind, status), status)


def status_badge_parts(status: str, kind: str = "partner") -> tuple[str, str, str]:
    icon, tone = _STATUS_ICONS.get(kind, {}).get(status, ("•", "neutral"))
    return icon, tone, _status_label(kind, status)


def unread_count(user) -> int:
    """The inbox badge: a partner's unread messages and announcements; for operators, partners' messages."""
    from portal.services import inbox

    if user.is_operator:
        return inbox.team_unread_count()
    return inbox.partner_unread_count(user.partner)


def filesize(size: int | None) -> str:
    from portal.services.creative_files import format_size

    return "—" if size is None else format_size(size)


def file_url(key: str, download_name: str | None = None) -> str:
    """A short-lived address of a stored file (signed or presigned by the store)."""
    from portal.storage import current_storage

    return current_storage().url(key, download_name=download_name)


def creative_kind(kind: str) -> str:
    from portal.services.creatives import kind_label

    return kind_label(kind)


def language_name(code: str | None) -> str:
    """A creative's language in the reader's language: "de" → "German", "德语"."""
    if not code:
        return "—"
    return get_locale().languages.get(code) or code


def _channel_choices():
    from portal.forms import channel_choices

    return channel_choices()


def product_names(product_ids: list[str]) -> list[str]:
    from portal.services.rewards import product_names as names

    return names(product_ids)


def why_this_amount(line) -> str:
    """The partner's "why this amount" for one commission line."""
    from portal.services.rewards import explain

    return explain(line)


# How the tracking service notes why an event was not attributed (stored as written, shown
# in the reader's language): "unknown click id; unknown ref", "partner ab12 is suspended; …".
_NOT_ATTRIBUTED = re.compile(r"^partner (\S+) is (\w+); not attributed$")
# The notes portal.services.tracking writes about coupon codes.
_COUPON_NOTE = re.compile(
    r"^(?:coupon (\S+) is (disabled|requested)"
    r"|coupon (\S+) beat an older click of another partner"
    r"|first touch: the click beat coupon (\S+))$"
)


def attribution_note(note: str | None) -> str:
    """The operator's words for a stored attribution note; an unknown note is shown as stored."""
    if not note:
        return ""
    from portal.services.accounts import partner_status_label

    fixed = {
        "unknown click id": _("unknown click id"),
        "unknown ref": _("unknown partner code"),
        "click older than the cookie window": _("click older than the cookie window"),
        "self-referral: the customer's e-mail is the partner's": _(
            "self-referral: the customer's e-mail is the partner's"
        ),
        "unknown coupon": _("unknown coupon code"),
    }
    match = _NOT_ATTRIBUTED.match(note)
    if match:  # one note on its own (it contains the separator)
        return _(
            "partner %(code)s is %(status)s; not attributed",
            code=match.group(1),
            status=partner_status_label(match.group(2)),
        )
    # The separator between notes: "; " in English, a full-width "；" in Chinese.
    return _("; ").join(fixed.get(part) or _coupon_note(part) for part in note.split("; "))


def _coupon_note(part: str) -> str:
    match = _COUPON_NOTE.match(part)
    if match is None:
        return part
    code, state, beat, lost = match.groups()
    if state == "disabled":
        return _("coupon code %(code)s is switched off", code=code)
    if state == "requested":
        return _("coupon code %(code)s is not approved yet", code=code)
    if beat:
        return _("coupon code %(code)s beat an older click of another partner", code=beat)
    return _("first touch: the click beat coupon code %(code)s", code=lost)


def commission_kind(kind: str) -> str:
    return {
        "base": _("commission"),
        "product": _("commission (product rate)"),
        "tier": _("commission (tier rate)"),
        "campaign": _("commission (campaign rate)"),
        "deal": _("commission (private deal)"),
        "bonus": _("bonus"),
        "reversal": _("reversal"),
        "clawback": _("clawback"),
    }.get(kind, kind)


def init_app(app: Flask) -> None:
    from portal.markup import preview, render_markdown

    app.add_template_filter(render_markdown, "markdown")
    app.add_template_filter(preview, "preview")
    app.add_template_global(unread_count)
    app.add_template_global(main_nav)
    app.add_template_filter(money, "money")
    app.add_template_filter(when, "when")
    app.add_template_filter(number, "number")
    app.add_template_filter(percent_bp, "percent_bp")
    app.add_template_filter(channel_label, "channel")
    app.add_template_filter(channel_labels, "channels")
    app.add_template_filter(country_name, "country")
    app.add_template_filter(host, "host")
    app.add_template_filter(rate, "rate")
    app.add_template_filter(day, "day")
    app.add_template_filter(reason_label, "reason")
    app.add_template_filter(filesize, "filesize")
    app.add_template_filter(creative_kind, "creative_kind")
    app.add_template_filter(language_name, "language")
    app.add_template_global(file_url)
    app.add_template_global(_channel_choices, "channel_choices")
    app.add_template_global(base_commission)
    app.add_template_global(bar_chart)
    app.add_template_global(next_payout_sentence)
    app.add_template_global(dimension_label)
    app.add_template_global(risk_label)
    app.add_template_global(why_this_amount, "why")
    app.add_template_global(product_names)
    app.add_template_filter(commission_kind, "commission_kind")
    app.add_template_filter(attribution_note, "attribution_note")
    app.add_template_global(get_locale)
    app.add_template_global(html_lang)
    app.add_template_global(locale_choices)
    app.add_template_global(room_for, "live_room")
    app.add_template_global(status_badge_parts)
    app.add_template_global(generate_csrf, "csrf_token")

    @app.context_processor
    def inject_common():
        # E-mails are also rendered outside a request (jobs).
        return {"is_htmx": has_request_context() and bool(getattr(request, "htmx", False))}

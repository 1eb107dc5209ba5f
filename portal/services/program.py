"""Program settings: reading the one program and changing its rules."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit
from zoneinfo import available_timezones

import sqlalchemy as sa
from flask import current_app
from flask_babel import get_locale
from flask_babel import gettext as _

from portal import urlcheck
from portal.errors import InvalidSetting
from portal.extensions import db
from portal.models import CommissionType, Conversion, CouponAttribution, PayoutSchedule, Program, User
from portal.money import format_money, is_currency
from portal.services.audit import record_event

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$"
)


# The largest maximum sale the database accepts (its CHECK max_sale_range).
MAX_SALE_CEILING_MINOR = 2_000_000_000
_PARAM = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")


def get_program() -> Program:
    """The program. A fresh install gets one with safe defaults on first read."""
    program = db.session.scalars(sa.select(Program).order_by(Program.id).limit(1)).first()
    if program is None:
        program = Program(name="Partner program", default_landing_url="", allowed_domains=[])
        db.session.add(program)
        db.session.flush()
    return program


def _detached_copy(program: Program) -> Program:
    copy = Program(**{attr.key: getattr(program, attr.key) for attr in sa.inspect(Program).column_attrs})
    copy.allowed_domains = list(program.allowed_domains or [])
    return copy


def cached_program() -> Program:
    """A read-only copy of the program for the hot paths (the tracking API), cached in each
    process by ``portal.lookups``: a settings change shows in every worker within
    TRACKING_CACHE_CHECK_SECONDS. It belongs to no session: read it, never change or add it."""
    from portal import lookups

    return lookups.lookups().load("program", None, lambda: _detached_copy(get_program()))


def program_timezone() -> str:
    """The program's time zone without creating anything (UTC before set-up)."""
    tz = db.session.scalar(sa.select(Program.timezone).order_by(Program.id).limit(1))
    return tz or "UTC"


def normalise_domain(raw: str) -> str:
    """``"https://Shop.Example.com/"`` → ``"shop.example.com"``; raises InvalidSetting."""
    text = raw.strip().lower()
    if "://" in text:
        text = urlsplit(text).hostname or ""
    text = text.rstrip("/").removeprefix("*.").rstrip(".")
    if not _HOSTNAME.match(text):
        raise InvalidSetting(_("“%(domain)s” is not a domain name.", domain=raw.strip()), "allowed_domains")
    return text


# The one URL check lives in portal.urlcheck; these names stay for the services that import them.
host_is_allowed = urlcheck.host_is_allowed
is_allowed_destination = urlcheck.is_allowed_destination


@dataclass
class ProgramSettings:
    name: str
    currency: str
    timezone: str
    cookie_window_days: int
    hold_period_days: int
    allowed_domains: list[str] = field(default_factory=list)
    default_landing_url: str = ""
    minimum_payout_minor: int = 5000
    payout_schedule: str = PayoutSchedule.MONTHLY
    payout_day: int = 15
    commission_type: str = CommissionType.PERCENT
    commission_percent_bp: int = 1000
    commission_flat_minor: int = 0
    ref_param: str = "ref"
    click_id_param: str = "click_id"
    fraud_self_referral: bool = True
    fraud_click_flood: bool = True
    click_flood_per_minute: int = 20
    fraud_duplicate_order: bool = True
    duplicate_window_minutes: int = 10
    allow_withdrawals: bool = False
    max_sale_minor: int = 100_000_000
    require_team_2fa: bool = False
    default_locale: str = "en"
    coupon_attribution: str = CouponAttribution.COUPON


def settings_of(program: Program) -> ProgramSettings:
    return ProgramSettings(**{name: getattr(program, name) for name in ProgramSettings.__dataclass_fields__})


def update_program_settings(program: Program, actor: User, settings: ProgramSettings) -> Program:
    """Check the rules that tie settings together, then apply and audit the change."""
    if not is_currency(settings.currency):
        raise InvalidSetting(_("Unknown currency code."), "currency")
    if settings.currency != program.currency and db.session.scalar(
        sa.select(sa.exists().select_from(Conversion))
    ):
        # Every amount already recorded (sales, commissions, payouts) is in the current currency.
        raise InvalidSetting(
            _(
                "The currency can't change once sales are recorded: every amount so far is in %(currency)s.",
                currency=program.currency,
            ),
            "currency",
        )
    if settings.timezone not in available_timezones():
        raise InvalidSetting(_("Unknown time zone."), "timezone")
    if settings.default_locale not in current_app.config["SUPPORTED_LOCALES"]:
        raise InvalidSetting(_("Choose a language from the list."), "default_locale")
    domains: list[str] = []
    for raw in settings.allowed_domains:
        domain = normalise_domain(raw)
        if domain not in domains:
            domains.append(domain)
    if not domains:
        raise InvalidSetting(_("List at least one domain partners may link to."), "allowed_domains")
    try:
        settings.default_landing_url = urlcheck.clean_destination(settings.default_landing_url, domains)
    except urlcheck.UnsafeUrl:
        raise InvalidSetting(
            _("The default landing page must be an http(s) address on an allowed domain."),
            "default_landing_url",
        ) from None
    if settings.payout_schedule == PayoutSchedule.MONTHLY and not 1 <= settings.payout_day <= 28:
        raise InvalidSetting(_("Choose a day of the month from 1 to 28."), "payout_day")
    if settings.payout_schedule != PayoutSchedule.MONTHLY and not 0 <= settings.payout_day <= 6:
        raise InvalidSetting(_("Choose a weekday."), "payout_day")
    for name in ("ref_param", "click_id_param"):
        if not _PARAM.match(getattr(settings, name)):
            raise InvalidSetting(_("Letters, digits and _ only, starting with a letter."), name)
    if settings.ref_param == settings.click_id_param:
        raise InvalidSetting(_("The two parameters need different names."), "click_id_param")
    if settings.click_flood_per_minute < 1:
        raise InvalidSetting(_("At least 1."), "click_flood_per_minute")
    if settings.duplicate_window_minutes < 1:
        raise InvalidSetting(_("At least 1."), "duplicate_window_minutes")
    if not 1 <= settings.max_sale_minor <= MAX_SALE_CEILING_MINOR:
        raise InvalidSetting(
            _(
                "Enter more than zero and at most %(most)s.",
                most=format_money(
                    MAX_SALE_CEILING_MINOR, settings.currency, locale=str(get_locale() or "en")
                ),
            ),
            "max_sale",
        )
    if settings.coupon_attribution not in set(CouponAttribution):
        raise InvalidSetting(_("Choose one of the two rules."), "coupon_attribution")
    settings.allowed_domains = domains

    before = asdict(settings_of(program))
    for name, value in asdict(settings).items():
        setattr(program, name, value)
    after = asdict(settings_of(program))
    changed = {k: [before[k], after[k]] for k in after if before[k] != after[k]}
    if changed:
        record_event(actor, "program.settings_changed", "program", program.id, changes=changed)
    db.session.flush()
    return program

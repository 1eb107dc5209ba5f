"""Which language and time zone a page, a message or an e-mail is shown in.

A page: the signed-in person's own choice (account page), else the language the
visitor picked with the switch (a cookie), else the browser's ``Accept-Language``,
else the program's default language. A message or e-mail to someone: their own
choice, else the program's default (``speaking_to``). Time zone: the person's own,
else the program's. Periods ("this month", payout dates, monthly rollups) are the
program's and keep its zone wherever they are computed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from zoneinfo import available_timezones

import flask_babel
import pytz
import sqlalchemy as sa
from babel import Locale, UnknownLocaleError
from babel.core import get_global
from babel.dates import get_timezone_location
from flask import current_app, g, has_request_context, request
from flask_login import current_user

# The cookie the language switch sets for visitors who are not signed in.
LOCALE_COOKIE = "portal_locale"
LOCALE_COOKIE_MAX_AGE = 365 * 86400

# Each language by its own name, as the switch shows it.
_OWN_NAMES = {"en": "English", "zh_Hans_CN": "简体中文"}


def supported_locales() -> tuple[str, ...]:
    return tuple(current_app.config["SUPPORTED_LOCALES"])


def language_name(locale: str) -> str:
    """A language in its own words: "English", "简体中文"."""
    if locale in _OWN_NAMES:
        return _OWN_NAMES[locale]
    return Locale.parse(locale).get_display_name(locale) or locale


def locale_choices() -> list[tuple[str, str]]:
    return [(code, language_name(code)) for code in supported_locales()]


_REGIONS = (
    "Africa",
    "America",
    "Antarctica",
    "Arctic",
    "Asia",
    "Atlantic",
    "Australia",
    "Europe",
    "Indian",
    "Pacific",
)


def timezone_choices() -> list[tuple[str, str]]:
    """The zones a person can live in, named in the reader's language: "中国（上海）时间 · Asia/Shanghai"."""
    return list(_timezone_choices(str(flask_babel.get_locale() or "en")))


@cache
def _timezone_choices(locale: str) -> tuple[tuple[str, str], ...]:
    zones = sorted(z for z in available_timezones() if z.split("/", 1)[0] in _REGIONS and "/" in z)
    return (("UTC", "UTC"), *((z, f"{get_timezone_location(z, locale=locale)} · {z}") for z in zones))


def html_lang(locale: Locale | str | None) -> str:
    """The BCP 47 tag for ``<html lang>``: "en", "zh-CN"."""
    if locale is None:
        return "en"
    parsed = locale if isinstance(locale, Locale) else Locale.parse(str(locale))
    return "-".join(part for part in (parsed.language, parsed.territory) if part)


@cache
def _maximised(tag: str) -> tuple[str, str | None, str | None] | None:
    """(language, script, territory) with the likely script and territory filled in:
    "zh-CN", "zh-Hans" and "zh" all give ("zh", "Hans", "CN"); "zh-TW" gives Hant."""
    try:
        parsed = Locale.parse(tag.replace("-", "_"))
    except (ValueError, TypeError, UnknownLocaleError):
        return None
    likely = get_global("likely_subtags")
    for key in (str(parsed), f"{parsed.language}_{parsed.territory}", parsed.language):
        if key in likely:
            full = Locale.parse(likely[key])
            return parsed.language, parsed.script or full.script, parsed.territory or full.territory
    return parsed.language, parsed.script, parsed.territory


def negotiate(accepted: Iterable[str], supported: Iterable[str]) -> str | None:
    """The first supported locale that serves one of ``accepted`` (best first).

    The same language in the same script serves: a reader of ``zh-Hans``, ``zh-CN``,
    ``zh-SG`` or plain ``zh`` gets ``zh_Hans_CN``; ``zh-TW`` (Traditional) does not.
    """
    offered = [(code, _maximised(code)) for code in supported]
    for tag in accepted:
        wanted = _maximised(tag) if tag and tag != "*" else None
        if wanted is None:
            continue
        exact = [code for code, have in offered if have == wanted]
        close = [code for code, have in offered if have and have[:2] == wanted[:2]]
        if exact or close:
            return (exact or close)[0]
    return None


def program_locale() -> str:
    """The program's default language (the first supported one before set-up)."""
    supported = supported_locales()
    if g.get("database_unavailable"):
        return supported[0]  # the 503 page is rendered without the database
    if "program_locale" not in g:
        try:
            g.program_locale = _stored_program_locale()
        except sa.exc.DBAPIError:
            # The database is down (the error page asking for its language): English, and
            # nothing else in this request asks it again.
            g.database_unavailable = True
            return supported[0]
    return g.program_locale if g.program_locale in supported else supported[0]


def _stored_program_locale() -> str | None:
    from portal import lookups
    from portal.extensions import db

    if not _schema_exists():
        return None
    # Read on nearly every request (any translated text): cached like the program itself, and
    # never flushing the caller's unfinished changes (a service may be raising a DomainError).
    with db.session.no_autoflush:
        return lookups.lookups().load("program_locale", None, _read_program_locale)


def _read_program_locale() -> str | None:
    from portal.extensions import db
    from portal.models import Program

    return db.session.scalar(sa.select(Program.default_locale).order_by(Program.id).limit(1))


def _schema_exists() -> bool:
    """False before `flask db upgrade` (and in an app made without a database): English then."""
    state = current_app.extensions.setdefault("portal_i18n", {})
    if not state.get("schema"):
        from portal.extensions import db

        # On the session's own connection: no second connection in the middle of a request.
        state["schema"] = sa.inspect(db.session.connection()).has_table("programs")
    return state["schema"]


def _program_timezone() -> str:
    if "program_timezone" not in g:
        from portal.services.program import program_timezone

        g.program_timezone = program_timezone()
    return g.program_timezone


def select_locale() -> str:
    supported = supported_locales()
    if has_request_context():
        # While the database is down the error page must not load the user to ask.
        signed_in = not g.get("database_unavailable") and current_user.is_authenticated
        if signed_in and current_user.locale in supported:
            return current_user.locale
        chosen = request.cookies.get(LOCALE_COOKIE)
        if chosen in supported:
            return chosen
        accepted = negotiate((tag for tag, _quality in request.accept_languages), supported)
        if accepted:
            return accepted
    return program_locale()


def select_timezone() -> str:
    """The viewer's own zone if set, else the program's."""
    if has_request_context() and g.get("database_unavailable"):
        return current_app.config["BABEL_DEFAULT_TIMEZONE"]
    if has_request_context() and current_user.is_authenticated and current_user.timezone:
        return current_user.timezone
    return _program_timezone()


def recipient_locale(user) -> str:
    """The language to write to ``user`` in: their own choice, else the program's default."""
    if user is not None and user.locale in supported_locales():
        return user.locale
    return program_locale()


def recipient_timezone(user) -> str:
    if user is not None and user.timezone:
        return user.timezone
    return _program_timezone()


@contextmanager
def speaking_to(user) -> Iterator[None]:
    """Render text for ``user`` (a message, an e-mail) in their language and time zone,
    whoever's request or job it happens in."""
    with flask_babel.force_locale(recipient_locale(user)):
        ctx = flask_babel._get_current_context()
        if ctx is None:
            yield
            return
        missing = object()
        before = getattr(ctx, "babel_tzinfo", missing)
        ctx.babel_tzinfo = pytz.timezone(recipient_timezone(user))
        try:
            yield
        finally:
            if before is missing:
                del ctx.babel_tzinfo
            else:
                ctx.babel_tzinfo = before


def set_reading_preferences(user, locale: str | None, timezone: str | None) -> None:
    """Keep ``user``'s own language and time zone (None: the automatic choice)."""
    from portal.errors import DomainError
    from portal.extensions import db

    if locale is not None and locale not in supported_locales():
        raise DomainError(flask_babel.gettext("Choose a language from the list."), "locale")
    if timezone is not None and timezone not in available_timezones():
        raise DomainError(flask_babel.gettext("Unknown time zone."), "timezone")
    user.locale = locale
    user.timezone = timezone
    db.session.flush()


# What an answer's language depends on (``Vary``): the browser's list and the switch's cookie.
LANGUAGE_VARY = ("Accept-Language", "Cookie")


def say_language(response):
    """A page or API answer depends on ``Accept-Language`` and the switch's cookie: say so to
    caches (``Vary``), and name the language it is written in (``Content-Language``) when the
    request read any text."""
    if request.endpoint == "static":
        return response
    if "Vary" in response.headers:
        response.vary.update(LANGUAGE_VARY)
    else:  # most answers: set at once (``vary`` parses and writes the header back per call)
        response.headers["Vary"] = ", ".join(LANGUAGE_VARY)
    ctx = flask_babel._get_current_context()
    locale = getattr(ctx, "babel_locale", None) if ctx is not None else None
    if locale is not None and "Content-Language" not in response.headers:
        response.headers["Content-Language"] = html_lang(locale)
    return response


def init_app(app, babel) -> None:
    babel.init_app(app, locale_selector=select_locale, timezone_selector=select_timezone)
    app.after_request(say_language)

"""Which language and time zone a page is shown in."""

from __future__ import annotations

from flask import current_app, g, has_request_context, request
from flask_login import current_user


def select_locale() -> str:
    supported = current_app.config["SUPPORTED_LOCALES"]
    if has_request_context():
        # While the database is down the error page must not load the user to ask.
        signed_in = not g.get("database_unavailable") and current_user.is_authenticated
        if signed_in and current_user.locale in supported:
            return current_user.locale
        return request.accept_languages.best_match(supported) or supported[0]
    return supported[0]


def select_timezone() -> str:
    """The viewer's own zone if set, else the program's."""
    if has_request_context() and g.get("database_unavailable"):
        return current_app.config["BABEL_DEFAULT_TIMEZONE"]
    if has_request_context() and current_user.is_authenticated and current_user.timezone:
        return current_user.timezone
    if "program_timezone" not in g:
        from portal.services.program import program_timezone

        g.program_timezone = program_timezone()
    return g.program_timezone

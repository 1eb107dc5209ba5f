"""Error pages in the house style; JSON for the API.

While the database is unreachable every page answers a styled 503 rendered without
it (no signed-in user, no session, the language from Accept-Language) and the API a
503 JSON body with Retry-After; the log gets one line per failed request.
"""

from __future__ import annotations

from flask import Flask, current_app, g, jsonify, render_template, request
from flask_babel import gettext as _
from flask_babel import refresh as refresh_babel
from flask_wtf.csrf import CSRFError
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException, InternalServerError

from portal.extensions import db

# What a client is told to wait before trying again while the database is down.
RETRY_AFTER_SECONDS = 15

_API_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "validation_failed",
    429: "rate_limited",
    500: "server_error",
    503: "unavailable",
}


def database_unavailable(error: BaseException | None) -> bool:
    """True when ``error`` (or what caused it) says the database cannot be reached,
    as opposed to a query the database refused."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, sa_exc.TimeoutError):  # no pooled connection came free in time
            return True
        if isinstance(error, sa_exc.DBAPIError):
            if error.connection_invalidated or isinstance(error, sa_exc.InterfaceError):
                return True
            if isinstance(error, sa_exc.OperationalError) and hasattr(error.orig, "sqlstate"):
                # psycopg: no SQLSTATE means the connection itself failed; class 08 is
                # "connection exception", 57P0x the server shutting down or starting.
                state = error.orig.sqlstate
                if state is None or state.startswith(("08", "57P")):
                    return True
        error = error.__cause__ or error.__context__
    return False


def _summary(error: BaseException) -> str:
    """The first line of the deepest cause: what the driver said, without the SQL."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = str(getattr(error, "orig", None) or error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def unavailable_response():
    """The 503 answer while the database is down; touches neither the database nor the session."""
    g.database_unavailable = True  # portal.i18n then takes the language from the request only
    refresh_babel()
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS), "Cache-Control": "no-store"}
    message = _("The portal cannot reach its database right now. Try again in a moment.")
    if wants_json():
        response, status = api_error(503, message, code="unavailable")
        response.headers.update(headers)
        return response, status
    # Not render_template: its context processors load the signed-in user.
    page = current_app.jinja_env.get_template("errors/unavailable.html").render(
        retry_after=RETRY_AFTER_SECONDS, locale=_request_locale(), request=request
    )
    return page, 503, headers


def _request_locale() -> str:
    supported = current_app.config["SUPPORTED_LOCALES"]
    return request.accept_languages.best_match(supported) or supported[0]


def _titles() -> dict[int, tuple[str, str]]:
    return {
        400: (_("Bad request"), _("The request could not be understood. Go back and try again.")),
        403: (_("Not allowed"), _("Your account does not have access to this page.")),
        404: (_("Page not found"), _("There is nothing at this address. Check the link or go home.")),
        405: (_("Not allowed"), _("This page cannot be used that way.")),
        413: (_("Too large"), _("What you sent is larger than the portal accepts.")),
        429: (_("Slow down"), _("Too many attempts in a short time. Wait a minute and try again.")),
        500: (
            _("Something went wrong"),
            _("We could not finish that. Nothing was half-saved; try again in a moment."),
        ),
    }


def _api_messages() -> dict[int, str]:
    """What an API client reads for an HTTP error the portal did not word itself (werkzeug's
    and Flask-Limiter's own descriptions are English): the request's language, like every
    other ``message``."""
    return {
        400: _("The request could not be understood."),
        401: _("Sign in or send a valid API key."),
        403: _("This request is not allowed."),
        404: _("There is nothing at this address."),
        405: _("This address does not accept the %(method)s method.", method=request.method),
        413: _("What you sent is larger than the portal accepts."),
        429: _("Too many requests in a short time. Wait a minute and try again."),
        500: _("Something went wrong. Nothing was half-saved; try again in a moment."),
    }


def _own_description(error: HTTPException) -> bool:
    """True when the code that raised ``error`` wrote its description (translated there), not
    werkzeug's default for the class; a rate limit's description is the limit itself."""
    from flask_limiter.errors import RateLimitExceeded

    if getattr(error, "says_why", False):
        return True
    return (
        bool(error.description)
        and error.description != type(error).description
        and not isinstance(error, RateLimitExceeded)
    )


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path in {"/healthz", "/readyz", "/livez"}


def api_error(status: int, message: str, fields: dict | None = None, code: str | None = None):
    body = {
        "error": {"code": code or _API_CODES.get(status, "error"), "message": message, "fields": fields or {}}
    }
    return jsonify(body), status


def init_app(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError):
        if wants_json():
            message = _("The form expired or came from elsewhere. Reload it and send it again.")
            return api_error(400, message, code="csrf_failed")
        return (
            render_template(
                "errors/error.html",
                code=400,
                title=_("Form expired"),
                message=_(
                    "This form was open too long or came from elsewhere, so it was not saved. "
                    "Go back, reload the page and send it again."
                ),
            ),
            400,
        )

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if g.get("database_unavailable"):
            return unavailable_response()
        try:
            # The titles' language and the page frame ask for the signed-in user (the database).
            return _http_error_page(error)
        except Exception as page_error:
            if not database_unavailable(page_error):
                raise
            return database_down(page_error)

    def database_down(error: BaseException):
        _rollback_quietly()
        app.logger.error("database unavailable on %s %s: %s", request.method, request.path, _summary(error))
        return unavailable_response()

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception):
        if isinstance(error, HTTPException):  # pragma: no cover - handled above
            return http_error(error)
        if database_unavailable(error):
            return database_down(error)
        _rollback_quietly()
        app.logger.exception("Unhandled error on %s %s", request.method, request.path)
        if app.config.get("TESTING") and app.config.get("PROPAGATE_TEST_ERRORS", True):
            raise error
        return http_error(InternalServerError())


def _http_error_page(error: HTTPException):
    status = error.code or 500
    title, message = _titles().get(status, (error.name, error.description))
    if getattr(error, "says_why", False):
        message = error.description  # the portal's own words (portal/guards.py refuse())
    if status == 413:
        from portal.views import too_large_message

        message = too_large_message() or message
    if wants_json():
        if status != 413 and not _own_description(error):
            message = _api_messages().get(status, message)
        elif status != 413:
            message = error.description
        return api_error(status, message)
    response = render_template("errors/error.html", code=status, title=title, message=message)
    return response, status, (error.get_response().headers if status == 405 else {})


def _rollback_quietly() -> None:
    try:
        db.session.rollback()
    except Exception:  # the connection is gone; the session is discarded at teardown
        current_app.logger.debug("rollback after a failed request failed too", exc_info=True)

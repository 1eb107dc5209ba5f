"""Error pages in the house style; JSON for the API."""

from __future__ import annotations

from flask import Flask, jsonify, render_template, request
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

from portal.extensions import db

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
}


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


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/healthz"


def api_error(status: int, message: str, fields: dict | None = None, code: str | None = None):
    body = {
        "error": {"code": code or _API_CODES.get(status, "error"), "message": message, "fields": fields or {}}
    }
    return jsonify(body), status


def init_app(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError):
        if wants_json():
            return api_error(400, error.description, code="csrf_failed")
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
        status = error.code or 500
        title, message = _titles().get(status, (error.name, error.description))
        if getattr(error, "says_why", False):
            message = error.description  # the portal's own words (portal/guards.py refuse())
        if status == 413:
            from portal.views import too_large_message

            message = too_large_message() or message
        if wants_json():
            return api_error(status, error.description or message)
        response = render_template("errors/error.html", code=status, title=title, message=message)
        return response, status, (error.get_response().headers if status == 405 else {})

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception):
        if isinstance(error, HTTPException):  # pragma: no cover - handled above
            return http_error(error)
        db.session.rollback()
        app.logger.exception("Unhandled error on %s %s", request.method, request.path)
        if app.config.get("TESTING") and app.config.get("PROPAGATE_TEST_ERRORS", True):
            raise error
        return http_error(InternalServerError())

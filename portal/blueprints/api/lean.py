"""``POST /api/v1/conversions`` answered at the WSGI level, as ``/go/`` is (track.routes).

A sale the brand's server reports is the API's hot path: under load most of a request's
own time went to Flask's per-request machinery (two URL adapters, the request context, ten
before / after hooks), and a worker's request threads take turns at one interpreter lock
with its sale writer, so that time was every sale's wait too. Here a well-formed sale with
a valid key, in the usual set-up, is checked, handed to the sale writer and answered with
the same code as the view (``routes``), and nothing else.

Anything else goes on to Flask with its body put back, and is answered there exactly as
before: a body that is not a JSON object, a field that fails (422, in the client's
language), a missing or wrong key (401), a query string, another content type, a body
over API_MAX_BODY_BYTES or without a length, a host outside TRUSTED_HOSTS. So does every
request while a key's requests count against API_RATE_LIMIT (the counting and its headers
are Flask-Limiter's): this path serves a limiter that is off, or on with
``API_RATE_LIMIT=off``, where a valid key is counted against nothing and a failed
authentication (API_AUTH_FAILURE_LIMIT) goes on to Flask with the 401. So does every
request with ``SALE_WRITE_MODE=inline``. A sale the writer did not write (its
batch failed, the database is down, no answer in time) goes on to the view too, with the
writer's outcome (``routes.HANDED_OVER``), which answers it as it answers its own: the request
never hands a sale over twice.

The answer of a written sale is the view's, byte for byte: ``jsonify``'s body and type, the
security headers (``headers.security_header_items``) and ``Vary`` (``i18n.say_language``);
the success answer reads no text, so it names no language. tests/functional/test_api_lean.py
sends each kind of request both ways and compares the answers.
"""

from __future__ import annotations

import io

from flask import Flask
from werkzeug.exceptions import SecurityError
from werkzeug.http import parse_options_header
from werkzeug.wsgi import get_host

from portal.blueprints.api import routes
from portal.blueprints.api.schemas import read_conversion
from portal.extensions import limiter
from portal.headers import security_header_items
from portal.i18n import LANGUAGE_VARY
from portal.salewriter import Outcome, Sale
from portal.services import api_keys
from portal.services.program import cached_program

PATH = "/api/v1/conversions"
# What ``i18n.say_language`` sets on an answer without a ``Vary`` of its own.
_VARY = ("Vary", ", ".join(LANGUAGE_VARY))


def serve(app: Flask, environ: dict, start_response, pass_on):
    """Answer a sale at ``PATH``, or hand the request to ``pass_on`` (the Flask app)."""
    plain = _plain_body(app, environ)
    if plain is None:
        return pass_on(environ, start_response)
    with app.app_context():
        answer = _written_answer(app, environ, *plain)
    if answer is None:
        return pass_on(environ, start_response)
    status, headers, body = answer
    start_response(status, headers)
    return [body]


def _plain_body(app: Flask, environ: dict) -> tuple[bytes, str] | None:
    """The body (read, and put back for Flask, should the request go on there) and the Bearer
    token of a request this path may answer; None when the request is Flask's from the start."""
    if environ.get("REQUEST_METHOD") != "POST" or environ.get("QUERY_STRING"):
        return None
    limits_on = app.config["RATELIMIT_ENABLED"] or limiter.enabled
    if limits_on and not routes.key_budget_off(app.config):
        return None  # a key's budget to count, and its headers to send: Flask-Limiter's
    writer = app.extensions.get("sale_writer")
    if writer is None or not writer.batched:
        return None
    if parse_options_header(environ.get("CONTENT_TYPE", ""))[0] != "application/json":
        return None
    length = environ.get("CONTENT_LENGTH", "")
    if "HTTP_TRANSFER_ENCODING" in environ or not (length.isascii() and length.isdigit()):
        return None
    size = int(length)
    if not 0 < size <= app.config["API_MAX_BODY_BYTES"]:
        return None
    token = api_keys.bearer_token(environ.get("HTTP_AUTHORIZATION", ""))
    if token is None:
        return None
    try:
        get_host(environ, app.config["TRUSTED_HOSTS"])
    except SecurityError:
        return None
    raw = environ["wsgi.input"].read(size)
    environ["wsgi.input"] = io.BytesIO(raw)
    return raw, token


def _written_answer(app: Flask, environ: dict, raw: bytes, token: str) -> tuple[str, list, bytes] | None:
    """The answer of the sale in ``raw`` once written; None to let the view answer (nothing
    handed over, or ``environ[routes.HANDED_OVER]`` says what came of it)."""
    try:
        body = app.json.loads(raw)
        if not isinstance(body, dict):
            return None
        data = read_conversion(body, cached_program())
        # Last of the checks: a key it returns may hold its note of use (committed below).
        key = api_keys.authenticate_api_key(token)
        if key is None:
            return None  # 401
        routes.end_own_transaction()
    except Exception:  # noqa: BLE001 - the view meets it again and answers it (400, 422, 503)
        return None  # what the checks read is rolled back as the app context ends
    handed = routes.hand_over(app.extensions["sale_writer"], data, body)
    if not isinstance(handed, Sale) or handed.outcome != Outcome.WRITTEN:
        environ[routes.HANDED_OVER] = handed
        return None
    response = app.json.response(handed.payload)  # jsonify's body and Content-Type
    response.status_code = 201 if handed.created else 200
    headers = [*response.headers.items(), *security_header_items(app.config), _VARY]
    return response.status, headers, response.get_data()

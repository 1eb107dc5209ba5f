"""Tracking API v1: signups, conversions and refunds from the brand's servers."""

from __future__ import annotations

import sqlalchemy as sa
from flask import current_app, g, jsonify, request
from flask_babel import gettext  # not ``_``: this module unpacks into ``_``
from werkzeug.exceptions import BadRequest

from portal.blueprints.api import bp
from portal.blueprints.api.openapi import openapi_document
from portal.blueprints.api.schemas import Invalid, read_conversion, read_refund, read_signup
from portal.database import begin_write
from portal.errorpages import api_error
from portal.errors import DomainError
from portal.extensions import csrf, db, limiter
from portal.models.types import utcnow
from portal.money import to_decimal_string
from portal.salewriter import Outcome, Sale, WriterTimeout
from portal.security import client_ip
from portal.services import api_keys, tracking
from portal.services.commissions import commission_summary
from portal.services.program import cached_program

csrf.exempt(bp)
PUBLIC_ENDPOINTS = {"api.openapi"}


# Requests that read, then write: they take the write lock themselves when they start
# writing (``record_conversion``), so SQLite's one writer is held only for the writes.
LATE_WRITERS = {"api.create_conversion"}


def _writes_from_the_start() -> bool:
    """A POST writes; it starts as a writer (SQLite's write lock first) unless it is one of
    LATE_WRITERS."""
    return request.method == "POST" and request.endpoint not in LATE_WRITERS


def _verified_key():
    """The API key this request proves it holds (secret checked), or None; checked once per
    request. The rate limits run before ``authenticate``, so this starts the write
    transaction first as ``authenticate`` would (``begin_write`` is idempotent)."""
    if "rate_limit_key" not in g:
        try:
            if _writes_from_the_start():
                begin_write(db.session())
            token = api_keys.bearer_token(request.headers.get("Authorization", ""))
            g.rate_limit_key = api_keys.authenticate_api_key(token)
        except sa.exc.DBAPIError:
            # The database is down: count against the address here, and let ``authenticate``
            # meet the error and answer the 503 (the limiter would take it for its own storage).
            db.session.rollback()
            g.rate_limit_key = None
            g.api_key_unverifiable = True
    return g.rate_limit_key


def _rate_key() -> str:
    """API_RATE_LIMIT counts per verified key; a request that proves no key (none, a wrong
    secret, a forged one with a live key's prefix) counts against its client address, so
    nobody can spend a merchant's budget, and changing the prefix escapes nothing."""
    key = _verified_key()
    return f"key:{key.id}" if key is not None else f"ip:{client_ip()}"


def _not_a_failure() -> bool:
    # A key the database could not check (an outage) is not a failed authentication: 503, not 429.
    key = _verified_key()
    return request.endpoint in PUBLIC_ENDPOINTS or key is not None or g.get("api_key_unverifiable", False)


# API_RATE_LIMIT=off: nothing the API is sent counts against a budget of its own; failed
# authentications still count against API_AUTH_FAILURE_LIMIT (below).
API_LIMIT_OFF = "off"


def key_budget_off(config) -> bool:
    return config["API_RATE_LIMIT"].strip().lower() == API_LIMIT_OFF


def _key_budget() -> str:
    # Flask-Limiter reads an empty limit as none.
    return "" if key_budget_off(current_app.config) else current_app.config["API_RATE_LIMIT"]


limiter.limit(_key_budget, key_func=_rate_key)(bp)
# Failed authentications per client address (a tighter budget: guessing and forging).
limiter.limit(
    lambda: current_app.config["API_AUTH_FAILURE_LIMIT"],
    key_func=lambda: f"auth-fail:{client_ip()}",
    exempt_when=_not_a_failure,
)(bp)


@bp.before_request
def authenticate():
    request.max_content_length = current_app.config["API_MAX_BODY_BYTES"]
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if _writes_from_the_start():
        begin_write(db.session())
    key = api_keys.authenticate_api_key(api_keys.bearer_token(request.headers.get("Authorization", "")))
    if key is None:
        response, status = api_error(401, gettext("Send a valid API key as 'Authorization: Bearer <key>'."))
        response.headers["WWW-Authenticate"] = 'Bearer realm="partner-portal"'
        return response, status
    g.api_key = key
    return None


def _body() -> dict:
    if not request.is_json:
        raise BadRequest(gettext("Send a JSON object with 'Content-Type: application/json'."))
    try:
        body = request.get_json()
    except BadRequest:
        raise BadRequest(gettext("The body is not valid JSON.")) from None
    if not isinstance(body, dict):
        raise BadRequest(gettext("The body must be a JSON object."))
    return body


@bp.errorhandler(Invalid)
def invalid_body(error: Invalid):
    db.session.rollback()
    return api_error(422, gettext("Some fields are missing or malformed."), error.fields)


@bp.errorhandler(DomainError)
def domain_error(error: DomainError):
    db.session.rollback()
    fields = {error.field: [error.message]} if error.field else {}
    if isinstance(error, tracking.Conflict):
        return api_error(409, error.message, fields, code="conflict")
    return api_error(422, error.message, fields)


def _partner_ref(partner) -> str | None:
    return partner.ref_code if partner is not None else None


def signup_json(signup) -> dict:
    return {
        "customer_id": signup.customer_id,
        "attributed": signup.partner_id is not None,
        "partner_ref": _partner_ref(signup.partner),
        "attributed_by": signup.attribution_method,
        "note": signup.attribution_note,
        "click_id": signup.click_id,
        "coupon": signup.coupon_code,
        "occurred_at": signup.occurred_at.isoformat(),
    }


def conversion_json(conversion) -> dict:
    summary = commission_summary(conversion)
    commission = None
    if summary is not None:
        commission = {
            "amount": to_decimal_string(summary["amount_minor"], summary["currency"]),
            "currency": summary["currency"],
            "status": summary["status"],
            "confirm_after": summary["confirm_after"].isoformat(),
        }
    currency = conversion.currency
    waiting = conversion.original_currency is not None and conversion.fx_rate is None
    original = exchange_rate = None
    if conversion.original_currency is not None:
        sent = conversion.original_currency
        original = {
            "amount": to_decimal_string(conversion.original_amount_minor, sent),
            "refunded_amount": to_decimal_string(conversion.original_refunded_minor, sent),
            "currency": sent,
        }
    if conversion.fx_rate is not None:
        exchange_rate = {
            "rate": conversion.fx_rate,
            "day": conversion.fx_rate_day.isoformat(),
            "source": conversion.fx_source,
        }
    return {
        "transaction_id": conversion.transaction_id,
        "status": conversion.status,
        "rejection_reason": conversion.rejection_reason,
        "flagged_reason": conversion.flagged_reason,
        "partner_ref": _partner_ref(conversion.partner),
        "attributed_by": conversion.attribution_method,
        "coupon": conversion.coupon_code,
        # In the program's currency; None while a sale in another currency waits for its rate.
        "amount": None if waiting else to_decimal_string(conversion.amount_minor, currency),
        "refunded_amount": None if waiting else to_decimal_string(conversion.refunded_minor, currency),
        "currency": conversion.currency,
        "original": original,
        "exchange_rate": exchange_rate,
        "customer_id": conversion.customer_id,
        "product_id": conversion.product_id,
        "occurred_at": conversion.occurred_at.isoformat(),
        "commission": commission,
    }


@bp.post("/signups")
def create_signup():
    body = _body()
    data = read_signup(body)
    signup, created = tracking.record_signup(cached_program(), data, body)
    payload = {"signup": signup_json(signup)}  # before commit: nothing to reload afterwards
    db.session.commit()
    return jsonify(payload), 201 if created else 200


def _conversion_answer(conversion) -> dict:
    return {"conversion": conversion_json(conversion)}


# environ: what became of a sale the WSGI-level path (lean.py) handed to the writer and left
# to this view to answer (a ``Sale`` not written, or the writer's ``WriterTimeout``).
HANDED_OVER = "portal.api.handed_over"


def end_own_transaction() -> None:
    """End a conversion request's own transaction before its sale goes to the writer (it holds
    no lock while it waits): committed when it holds the key's once-a-minute note of use, else
    rolled back (it only read). A request whose every look-up was cached has none."""
    if not db.session.registry.has():
        return
    if api_keys.use_noted(db.session()):
        db.session.commit()
    else:
        db.session.rollback()


def hand_over(writer, data, body: dict) -> Sale | WriterTimeout:
    """Hand the sale to the writer (portal/salewriter.py: written with other requests' sales
    in one transaction) and wait: the sale, which says what came of it, or the writer's
    ``WriterTimeout``."""
    try:
        return writer.record(data, body, utcnow(), _conversion_answer)
    except WriterTimeout as timeout:
        return timeout


@bp.post("/conversions")
def create_conversion():
    body = _body()
    program = cached_program()
    data = read_conversion(body, program)
    writer = current_app.extensions["sale_writer"]
    if writer.batched:
        end_own_transaction()
        # Handed over already by the WSGI-level path (lean.py), which left this answer to us.
        handed = request.environ.pop(HANDED_OVER, None)
        if handed is None:
            handed = hand_over(writer, data, body)
        if isinstance(handed, WriterTimeout):
            message = gettext("The sale could not be stored in time; send it again.")
            response, status = api_error(503, message, code="unavailable")
            response.headers["Retry-After"] = "15"
            return response, status
        if handed.outcome == Outcome.WRITTEN:
            return jsonify(handed.payload), 201 if handed.created else 200
        if handed.outcome == Outcome.FAILED:
            raise handed.error  # the database cannot be reached: 503
        # Outcome.ALONE: its batch failed, or it was refused: decided and written alone.
    conversion, created = tracking.record_conversion(program, data, body, defer_messages=True)
    payload = _conversion_answer(conversion)  # before commit: nothing to reload afterwards
    db.session.commit()
    return jsonify(payload), 201 if created else 200


def _conversion_or_404(transaction_id: str):
    conversion = tracking.find_conversion(transaction_id)
    if conversion is None:
        message = gettext("No conversion has transaction id %(id)s.", id=repr(transaction_id))
        return None, api_error(404, message)
    return conversion, None


@bp.get("/conversions/<path:transaction_id>")
def show_conversion(transaction_id: str):
    conversion, error = _conversion_or_404(transaction_id)
    if error:
        return error
    return jsonify({"conversion": conversion_json(conversion)})


@bp.post("/conversions/<path:transaction_id>/refund")
def refund_conversion(transaction_id: str):
    # Whether a body came is what was read, not Content-Length: a chunked body has none, and
    # taking it for no body would refund the whole sale instead of the amount it names.
    body = _body() if request.get_data(cache=True) else {}
    conversion, error = _conversion_or_404(transaction_id)
    if error:
        return error
    data = read_refund(body, conversion.original_currency or conversion.currency)
    outcome = tracking.apply_refund(
        conversion, data.amount_minor, data.note, refund_id=data.refund_id, raw=body
    )
    if outcome.replay:
        # A retry is answered as the first time (a refund written outside the API has no
        # stored answer: the conversion as it is now).
        payload = outcome.refund.response or {"conversion": conversion_json(outcome.conversion)}
        db.session.rollback()  # nothing was written
        return jsonify(payload)
    payload = {"conversion": conversion_json(outcome.conversion)}
    if outcome.refund is not None:
        tracking.keep_refund_answer(outcome.refund, payload)
    db.session.commit()
    return jsonify(payload)


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document(request.host_url.rstrip("/") + "/api/v1"))

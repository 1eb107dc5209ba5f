"""``GET /go/<code>``: record the click and send the shopper on, fast, to an allowed page only.

The redirect is answered at the WSGI level (``serve``, which ``portal.create_app`` puts
in front of Flask for paths under ``/go/``, as ``/socket.io/`` goes to Socket.IO): no
request context, no app-wide request hooks (CSRF, rate limits, sign-in, mail), no session,
no signed-in user — an app context for the database and the caches, and the one response
built by hand. The Flask route below stays for building links (``url_for``) and answers
the rare requests ``serve`` passes on: a code Flask refuses (404), a method other than
GET or HEAD (405), and the page that says the program is not set up yet (503). Both run
``follow``, the one decision.

Nor does it ever reach the app's error pages (which need a session and the database):
when the database cannot be reached, or anything else fails, it still sends the shopper
on, using what this process has cached, and keeps the click (see ``_fallback``).
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from html import escape

import sqlalchemy as sa
from flask import Flask, Response, current_app, redirect, render_template, request
from werkzeug.datastructures import MultiDict
from werkzeug.http import dump_cookie
from werkzeug.urls import iri_to_uri
from werkzeug.wrappers import Request

from portal import lookups
from portal.blueprints.track import CODE_PATTERN, bp
from portal.extensions import db
from portal.headers import security_header_items
from portal.models.types import utcnow
from portal.services import clicks

log = logging.getLogger(__name__)

SEEN_COOKIE = "pp_seen"
SEEN_SECONDS = 24 * 3600
PREFIX = "/go/"
_CODE = re.compile(CODE_PATTERN)
_REDIRECT_HEADERS = (("Cache-Control", "no-store"), ("Referrer-Policy", "no-referrer-when-downgrade"))


@dataclass(frozen=True)
class ClickRequest:
    """What the redirect reads of a request."""

    code: str
    path: str
    args: MultiDict | None
    ip: str | None
    user_agent: str | None
    referrer: str | None
    seen_before: bool

    @classmethod
    def of(cls, req: Request, code: str) -> ClickRequest:
        headers = req.headers
        return cls(
            code=code,
            path=req.path,
            args=req.args if req.query_string else None,
            ip=req.remote_addr,
            user_agent=headers.get("User-Agent"),
            referrer=headers.get("Referer"),
            seen_before=req.cookies.get(SEEN_COOKIE) == "1",
        )


@dataclass(frozen=True)
class Redirect:
    """Send the shopper to ``location``; ``cookie_path``: remember on this path that this
    browser has been here (a return within a day is not a unique click)."""

    location: str
    cookie_path: str | None = None


NOT_READY = "not ready"  # the program is not set up: there is nowhere safe to send anyone
UNAVAILABLE = "unavailable"  # the database is down and this process never knew where to go


def follow(click: ClickRequest) -> Redirect | str:
    """Record the click (if it earns) and say where to send the shopper."""
    try:
        route = clicks.routing()
        if route is None or not route.default_landing_url:
            return NOT_READY
        target = clicks.resolve(click.code)
        if target is None or not target.link_active:
            current_app.logger.info("click on unknown or disabled code %r", click.code[:80])
            return Redirect(route.default_landing_url)
        creative = click.args.get("creative") if click.args else None
        landing = clicks.creative_landing(creative) if creative else None
        destination = clicks.destination_for(target, route, landing) if landing else target.destination
        return _follow(click, target, route, destination, landing, creative)
    except Exception as error:  # noqa: BLE001 - a shopper is always sent on
        return _fallback(click, error)


def _fallback(click: ClickRequest, error: Exception) -> Redirect | str:
    """The redirect when something failed (the database is down): to the link's cached
    destination, the click kept, else to the program's default landing page; a plain 503
    only when this process has never known where that is."""
    if isinstance(error, sa.exc.SQLAlchemyError):
        log.warning("click on %r answered from the cache: %s", click.code[:80], type(error).__name__)
    else:
        if current_app.testing and current_app.config.get("PROPAGATE_TEST_ERRORS", True):
            raise error
        log.exception("click on %r answered from the cache after an error", click.code[:80])
    with contextlib.suppress(Exception):  # the connection may be gone; the session is removed anyway
        db.session.rollback()
    cache = lookups.lookups()
    route = cache.stale("routing", None)
    if route is lookups.MISS or route is None or not route.default_landing_url:
        return UNAVAILABLE
    target = clicks.cached_target(click.code)
    if target is lookups.MISS or target is None or not target.link_active or not target.destination:
        return Redirect(route.default_landing_url)
    if not target.partner_attributes:
        return Redirect(target.destination)
    try:
        return _follow(click, target, route, target.destination, None, None, spool_only=True)
    except Exception:  # the click cannot be kept; the shopper still goes on
        log.exception("click on %r not kept", click.code[:80])
        return Redirect(target.destination)


def _follow(
    click: ClickRequest, target, route, destination, landing, creative, *, spool_only=False
) -> Redirect:
    if not target.partner_attributes:
        # A suspended partner's links still take shoppers to the shop, but earn nothing.
        return Redirect(destination)
    row = clicks.click_row(
        target,
        route,
        destination=destination,
        ip=click.ip,
        user_agent=click.user_agent,
        referrer=click.referrer,
        sub=click.args.get("sub") if click.args else None,
        creative=creative,
        seen_before=click.seen_before,
        now=utcnow(),
    )
    writer = current_app.extensions["click_writer"]
    if spool_only:
        writer.keep(row)
    else:
        writer.record(row)
        if writer.inline:
            db.session.commit()
    if landing:
        params = {route.ref_param: target.ref_code, route.click_id_param: row["id"]}
        location = clicks.with_params(destination, params)
    else:
        location = target.location(row["id"])
    return Redirect(location, cookie_path=click.path)


def _seen_cookie(path: str) -> str:
    return dump_cookie(
        SEEN_COOKIE,
        "1",
        max_age=SEEN_SECONDS,
        path=path,
        httponly=True,
        samesite="Lax",
        secure=current_app.config["SESSION_COOKIE_SECURE"],
    )


_REDIRECT_BODY = '<!doctype html><title>Redirecting</title><a href="{}">Continue</a>'
_UNAVAILABLE_BODY = (
    b"<!doctype html><title>503</title><p>This link cannot be followed right now. "
    b"Please try again in a minute.</p>"
)


# --- the Flask route: links are built with it; it answers what ``serve`` passes on ------------


@bp.get("/<anycode:code>", merge_slashes=False)
def follow_link(code: str):
    outcome = follow(ClickRequest.of(request, code))
    if outcome == NOT_READY:
        return render_template("track/not_ready.html"), 503
    if outcome == UNAVAILABLE:
        headers = {"Retry-After": "60", "Cache-Control": "no-store"}
        return Response(_UNAVAILABLE_BODY, 503, headers, mimetype="text/html")
    response = redirect(outcome.location, 302)
    response.headers.extend(_REDIRECT_HEADERS)
    if outcome.cookie_path:
        response.headers.add("Set-Cookie", _seen_cookie(outcome.cookie_path))
    return response


# --- the WSGI-level redirect -------------------------------------------------------------------


def serve(app: Flask, environ: dict, start_response, pass_on):
    """Answer a request under ``/go/``, or hand it to ``pass_on`` (the Flask app) when it is
    not a plain click on a well-formed code, or the program is not set up."""
    req = Request(environ)
    code = req.path[len(PREFIX) :]
    if req.method not in ("GET", "HEAD") or not _CODE.fullmatch(code):
        return pass_on(environ, start_response)
    with app.app_context():
        outcome = follow(ClickRequest.of(req, code))
        if outcome == NOT_READY:
            return pass_on(environ, start_response)
        headers = list(_security_headers(app))
        if outcome == UNAVAILABLE:
            status, body = "503 Service Unavailable", _UNAVAILABLE_BODY
            headers += [("Retry-After", "60"), ("Cache-Control", "no-store")]
        else:
            location = outcome.location if outcome.location.isascii() else iri_to_uri(outcome.location)
            status = "302 Found"
            body = _REDIRECT_BODY.format(escape(location)).encode()
            headers += [("Location", location), *_REDIRECT_HEADERS]
            if outcome.cookie_path:
                headers.append(("Set-Cookie", _seen_cookie(outcome.cookie_path)))
    headers += [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))]
    start_response(status, headers)
    return [] if req.method == "HEAD" else [body]


def _security_headers(app: Flask) -> tuple[tuple[str, str], ...]:
    """The security headers every response carries (the redirect's own Referrer-Policy
    replaces the default one), computed once per app: they depend on its settings only."""
    items = app.extensions.get("track_security_headers")
    if items is None:
        items = tuple(item for item in security_header_items(app.config) if item[0] != "Referrer-Policy")
        app.extensions["track_security_headers"] = items
    return items

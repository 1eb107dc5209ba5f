"""``GET /go/<code>``: record the click and send the shopper on, fast, to an allowed page only.

A lean endpoint (``LEAN_ENDPOINTS`` in ``portal/__init__.py``): the app-wide request
hooks (CSRF, rate limits, sign-in, mail) do not run here; it reads no session and no
signed-in user. Nor does it ever reach the app's error pages (which need a session and the
database): when the database cannot be reached, or anything else fails, it still sends the
shopper on, using what this process has cached, and keeps the click (see ``_fallback``).
"""

from __future__ import annotations

import contextlib
import logging

import sqlalchemy as sa
from flask import Response, current_app, redirect, render_template, request

from portal import lookups
from portal.blueprints.track import bp
from portal.extensions import db
from portal.models.types import utcnow
from portal.services import clicks

log = logging.getLogger(__name__)

SEEN_COOKIE = "pp_seen"
SEEN_SECONDS = 24 * 3600


def _go(url: str):
    response = redirect(url, 302)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer-when-downgrade"
    return response


@bp.get("/<anycode:code>", merge_slashes=False)
def follow_link(code: str):
    try:
        route = clicks.routing()
        if route is None or not route.default_landing_url:
            # Only before the program is set up: there is nowhere safe to send anyone.
            return render_template("track/not_ready.html"), 503
        target = clicks.resolve(code)
        if target is None or not target.link_active:
            current_app.logger.info("click on unknown or disabled code %r", code[:80])
            return _go(route.default_landing_url)
        args = request.args if request.query_string else None
        creative = args.get("creative") if args else None
        landing = clicks.creative_landing(creative) if creative else None
        destination = clicks.destination_for(target, route, landing) if landing else target.destination
        return _follow(target, route, destination, landing, args, creative)
    except Exception as error:  # noqa: BLE001 - a shopper is always sent on
        return _fallback(code, error)


def _fallback(code: str, error: Exception) -> Response:
    """The redirect when something failed (the database is down): to the link's cached
    destination, the click kept, else to the program's default landing page; a plain 503
    only when this process has never known where that is."""
    if isinstance(error, sa.exc.SQLAlchemyError):
        log.warning("click on %r answered from the cache: %s", code[:80], type(error).__name__)
    else:
        if current_app.testing and current_app.config.get("PROPAGATE_TEST_ERRORS", True):
            raise error
        log.exception("click on %r answered from the cache after an error", code[:80])
    with contextlib.suppress(Exception):  # the connection may be gone; the session is removed anyway
        db.session.rollback()
    cache = lookups.lookups()
    route = cache.stale("routing", None)
    if route is lookups.MISS or route is None or not route.default_landing_url:
        return Response(
            "<!doctype html><title>503</title><p>This link cannot be followed right now. "
            "Please try again in a minute.</p>",
            503,
            {"Retry-After": "60", "Cache-Control": "no-store"},
            mimetype="text/html",
        )
    target = cache.stale("target", code.lower())
    if target is lookups.MISS or target is None or not target.link_active or not target.destination:
        return _go(route.default_landing_url)
    if not target.partner_attributes:
        return _go(target.destination)
    try:
        return _follow(target, route, target.destination, None, None, None, spool_only=True)
    except Exception:  # the click cannot be kept; the shopper still goes on
        log.exception("click on %r not kept", code[:80])
        return _go(target.destination)


def _follow(target, route, destination, landing, args, creative, *, spool_only=False) -> Response:
    if not target.partner_attributes:
        # A suspended partner's links still take shoppers to the shop, but earn nothing.
        return _go(destination)

    headers = request.headers
    row = clicks.click_row(
        target,
        route,
        destination=destination,
        ip=request.remote_addr,
        user_agent=headers.get("User-Agent"),
        referrer=headers.get("Referer"),
        sub=args.get("sub") if args else None,
        creative=creative,
        seen_before=request.cookies.get(SEEN_COOKIE) == "1",
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
    response = _go(location)
    # Scoped to this link's path: a return within a day is not a unique click.
    response.set_cookie(
        SEEN_COOKIE,
        "1",
        max_age=SEEN_SECONDS,
        path=request.path,
        httponly=True,
        samesite="Lax",
        secure=current_app.config["SESSION_COOKIE_SECURE"],
    )
    return response

"""``GET /go/<code>``: record the click and send the shopper on, fast, to an allowed page only.

A lean endpoint (``LEAN_ENDPOINTS`` in ``portal/__init__.py``): the app-wide request
hooks (CSRF, rate limits, sign-in, mail) do not run here; it reads no session and no
signed-in user.
"""

from __future__ import annotations

from flask import current_app, redirect, render_template, request

from portal.blueprints.track import bp
from portal.extensions import db
from portal.models.types import utcnow
from portal.services import clicks

SEEN_COOKIE = "pp_seen"
SEEN_SECONDS = 24 * 3600


def _go(url: str):
    response = redirect(url, 302)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer-when-downgrade"
    return response


@bp.get("/<anycode:code>", merge_slashes=False)
def follow_link(code: str):
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

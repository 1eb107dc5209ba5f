"""Small helpers shared by the views."""

from __future__ import annotations

from datetime import date
from functools import wraps

from flask import current_app, render_template, request
from flask_babel import gettext as _


def render_page_or_partial(page: str, partial: str, **context) -> str:
    """Full page for a normal request; just the fragment for an htmx swap.

    The page includes the partial, so both answers share one piece of markup.
    """
    if request.htmx and not request.htmx.boosted:
        return render_template(partial, **context)
    return render_template(page, **context)


def accepts_uploads(view):
    """Let this view take request bodies up to ``CREATIVE_UPLOAD_MAX_BYTES``.

    Goes under the role decorator, so the limit rises only for someone allowed
    to upload. The CSRF check moves here from the app-wide hook, because that
    hook reads the body before any view runs, under the small global limit.
    """
    from portal.extensions import csrf

    @wraps(view)
    def wrapped(*args, **kwargs):
        request.max_content_length = current_app.config["CREATIVE_UPLOAD_MAX_BYTES"]
        if current_app.config["WTF_CSRF_ENABLED"]:
            csrf.protect()
        return view(*args, **kwargs)

    csrf.exempt(wrapped)
    wrapped.accepts_uploads = True
    return wrapped


def too_large_message() -> str | None:
    """What to say when an upload view gets more than it accepts; None for other views."""
    view = current_app.view_functions.get(request.endpoint or "")
    if not getattr(view, "accepts_uploads", False):
        return None
    from portal.services.creative_files import format_size

    return _(
        "That upload is too large. Each image may be at most %(size)s, and at most %(n)d images go at once. "
        "Nothing was saved.",
        size=format_size(current_app.config["CREATIVE_MAX_BYTES"]),
        n=current_app.config["CREATIVE_BULK_MAX_FILES"],
    )


def day_arg(name: str) -> date | None:
    """A ``YYYY-MM-DD`` query parameter as a date; None when missing or malformed; 400 when absurd."""
    from portal.guards import day_allowed, day_range_message, refuse

    try:
        day = date.fromisoformat(request.args.get(name) or "")
    except ValueError:
        return None
    if not day_allowed(day):
        refuse(400, day_range_message())
    return day


def dashboard_range(program) -> tuple:
    """The period a dashboard asks for in its query string: ``(form, range, today)``.

    Today is the program's calendar day; a bad period falls back to the default and
    the form carries the errors.
    """
    from portal.forms import RangeForm
    from portal.models.types import utcnow
    from portal.services import dashboards, schedule

    today: date = schedule.local_today(program, utcnow())
    form = RangeForm(formdata=request.args)
    if form.validate():
        rng = dashboards.date_range(form.range.data, today, form.start.data, form.end.data)
    else:
        rng = dashboards.date_range(dashboards.DEFAULT_RANGE, today)
    return form, rng, today

"""Small helpers shared by the views."""

from __future__ import annotations

from datetime import date

from flask import render_template, request


def render_page_or_partial(page: str, partial: str, **context) -> str:
    """Full page for a normal request; just the fragment for an htmx swap.

    The page includes the partial, so both answers share one piece of markup.
    """
    if request.htmx and not request.htmx.boosted:
        return render_template(partial, **context)
    return render_template(page, **context)


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

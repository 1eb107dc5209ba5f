"""Small helpers shared by the views."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from functools import wraps

from flask import Response, current_app, flash, render_template, request, url_for
from flask_babel import gettext as _

from portal.database import begin_write
from portal.errors import DomainError
from portal.extensions import db
from portal.forms import put_error_on_form


class Outcome:
    """What a ``committing`` block came to: true when it committed, else ``refusal`` says why."""

    __slots__ = ("committed", "refusal")

    def __init__(self) -> None:
        self.committed = False
        self.refusal: DomainError | None = None

    def __bool__(self) -> bool:
        return self.committed


@contextmanager
def committing(
    form=None, *, write: bool = False, flash_refusal: bool | None = None, keep_refused: bool = False
) -> Iterator[Outcome]:
    """The one place a view commits: run the block (one service call), then commit once.

    A ``DomainError`` from the block is a refusal, not a crash: the transaction rolls back,
    the message goes onto ``form`` (beside its field, or above the form) and, when there is
    no form (or ``flash_refusal``), into a flash; the ``with`` ends quietly and the outcome
    is false, with ``refusal`` set. Any other exception rolls back and propagates.

    ``write=True`` starts the transaction as a writer first (``begin_write``: SQLite's write
    lock up front, nothing on PostgreSQL), so enter the block where the view used to call it:
    before the reads that the writes depend on.

    ``keep_refused=True`` commits a refused block too, for refusals that must leave a trace
    (a wrong two-factor code counts like one at sign-in).

        with committing(form) as done:
            service.do_it(...)
        if done:
            flash(...)
            return redirect(...)
    """
    outcome = Outcome()
    # Every block writes, so it takes its turn as a writer now: on SQLite a transaction that
    # has only read so far (the signed-in user, the form's objects) ends its snapshot and
    # waits for the write lock, instead of failing at once with "database is locked" when
    # another writer committed meanwhile (seen publishing under load, bench/soak.py).
    # ``write=True`` says the view needs it before reads of its own: the same call.
    del write
    begin_write(db.session())
    try:
        yield outcome
    except DomainError as error:
        if keep_refused:
            db.session.commit()
        else:
            db.session.rollback()
        outcome.refusal = error
        if form is not None:
            put_error_on_form(form, error)
        if flash_refusal if flash_refusal is not None else form is None:
            flash(error.message, "error")
        return
    except BaseException:
        db.session.rollback()
        raise
    db.session.commit()
    outcome.committed = True


def render_page_or_partial(page: str, partial: str, **context) -> str:
    """Full page for a normal request; just the fragment for an htmx swap.

    The page includes the partial, so both answers share one piece of markup.
    """
    if request.htmx and not request.htmx.boosted:
        return render_template(partial, **context)
    return render_template(page, **context)


def thread_context(thread, refresh_url: str) -> dict:
    """A conversation as a page shows it: the thread, its messages, and where the live list
    (``_partials/_thread_messages.html``) re-fetches itself from."""
    from portal.services import inbox

    return {
        "thread": thread,
        "messages": inbox.thread_messages(thread) if thread else [],
        "refresh_url": refresh_url,
    }


def campaign_request_context(found, program, endpoint: str, team: bool = False) -> dict:
    """What the partner's and the team's pages of a campaign request both show: the request,
    its conversation (live from ``endpoint``), its state and its rates in words."""
    from portal.services import campaign_requests

    return {
        "request_": found,
        "program": program,
        **thread_context(found.thread, url_for(endpoint, request_id=found.id, part="messages")),
        "badge": campaign_requests.badge_parts(found, team=team),
        "desired_rate": campaign_requests.desired_rate(found, program.currency),
        "offered_rate": campaign_requests.offered_rate(found, program.currency),
        "agreed_rate": campaign_requests.agreed_rate(found, program.currency),
        "campaign_end": campaign_requests.campaign_end(found, program),
        "link": campaign_requests.request_link(found),
    }


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


# --- QR code downloads (the partner's pages and the console's) ---------------------------

_MIMETYPES = {"svg": "image/svg+xml", "png": "image/png"}
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9_-]+")


def qr_download(text: str, kind: str, name: str) -> Response:
    """``text`` as a QR code file ``<name>-qr.<kind>`` to download."""
    from portal.services import qrcodes

    filename = f"{_UNSAFE_IN_NAME.sub('-', name)}-qr.{kind}"
    response = Response(
        qrcodes.qr_bytes(text, kind),
        mimetype=_MIMETYPES[kind],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
    # Asked again on every page view (a link's code can change), answered 304 when unchanged.
    response.cache_control.private = True
    response.cache_control.no_cache = True
    response.add_etag()
    return response.make_conditional(request)

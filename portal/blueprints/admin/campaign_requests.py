"""Operator console: the queue of custom campaign link requests (approve, counter-offer, decline).

Its own module so the rest of the console's rewards pages and this flow change apart.
"""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms.validators import DataRequired, Optional

from portal.blueprints.admin import bp
from portal.errors import DomainError, InvalidTransition
from portal.extensions import db
from portal.forms import ConfirmForm, PercentField, TextAreaField, at_most, put_error_on_form
from portal.security import operator_required
from portal.services import campaign_requests, inbox
from portal.services.program import get_program
from portal.views import campaign_request_context, committing, render_page_or_partial, thread_context


class CounterOfferForm(FlaskForm):
    """A custom campaign request: offer the partner another rate."""

    rate = PercentField(
        _l("Rate to offer (%)"),
        validators=[DataRequired(_l("Enter a rate in percent, e.g. 12.5."))],
        description=_l("Percent of each sale through the campaign's link."),
    )
    note = TextAreaField(
        _l("Message to the partner (optional)"),
        validators=[Optional(), at_most(2000)],
    )


class DeclineRequestForm(FlaskForm):
    reason = TextAreaField(
        _l("Reason shown to the partner"),
        validators=[DataRequired(_l("Say why, so the partner knows.")), at_most(2000)],
    )


@bp.get("/campaign-requests")
@operator_required
def list_campaign_requests():
    status = request.args.get("status", "open")
    if status not in campaign_requests.QUEUE_FILTERS:
        status = "open"
    program = get_program()
    return render_page_or_partial(
        "admin/campaign_requests.html",
        "admin/_partials/_campaign_request_queue.html",
        requests=campaign_requests.request_queue(status),
        waiting=campaign_requests.waiting_for_team(),
        status=status,
        filters=campaign_requests.QUEUE_FILTERS,
        program=program,
        badge_parts=campaign_requests.badge_parts,
        desired_rate=campaign_requests.desired_rate,
        offered_rate=campaign_requests.offered_rate,
    )


def _get_request(request_id: int):
    found = campaign_requests.get_request(request_id)
    if found is None:
        abort(404)
    return found


def _last_90_days(partner_id: int):
    """The partner's sales of the last 90 days (program days), to weigh the rate they ask for."""
    from portal.models.types import utcnow
    from portal.services import dashboards, schedule

    today = schedule.local_today(get_program(), utcnow())
    return dashboards.partner_series(partner_id, dashboards.date_range("90d", today))


def _request_page(found, counter_form=None, decline_form=None, status: int = 200):
    body = render_page_or_partial(
        "admin/campaign_request.html",
        "admin/_partials/_campaign_request.html",
        **campaign_request_context(found, get_program(), "admin.show_campaign_request", team=True),
        confirm_form=ConfirmForm(formdata=None),
        counter_form=counter_form or CounterOfferForm(formdata=None),
        decline_form=decline_form or DeclineRequestForm(formdata=None),
        sales_series=None if request.htmx else _last_90_days(found.partner_id),
    )
    return body, status


@bp.get("/campaign-requests/<int:request_id>")
@operator_required
def show_campaign_request(request_id: int):
    # Live re-fetches only read: two fragments refreshing at once must not race to write
    # (SQLite). Opening the page marks the partner's messages read, as the inbox does.
    if request.htmx:
        found = _get_request(request_id)
        if request.args.get("part") == "messages":
            return render_template(
                "_partials/_thread_messages.html",
                **thread_context(
                    found.thread, url_for("admin.show_campaign_request", request_id=found.id, part="messages")
                ),
            )
        return _request_page(found)
    with committing(write=True):
        found = _get_request(request_id)
        if found.thread is not None:
            inbox.mark_read_by_team(found.thread)
    return _request_page(found)


def _refused(found, error: DomainError, **forms):
    """Put a refusal (already rolled back) on the page; a step from the wrong state answers 409."""
    db.session.refresh(found)
    status = 409 if isinstance(error, InvalidTransition) else 422
    if isinstance(error, InvalidTransition) or not forms:
        flash(error.message, "error")
    else:
        put_error_on_form(next(iter(forms.values())), error)
    return _request_page(found, status=status, **forms)


@bp.post("/campaign-requests/<int:request_id>/approve")
@operator_required
def approve_campaign_request(request_id: int):
    found = _get_request(request_id)
    if not ConfirmForm().validate_on_submit():
        return _request_page(found, status=422)
    with committing(write=True, flash_refusal=False) as done:
        campaign_requests.approve_request(found, current_user, get_program())
    if not done:
        return _refused(found, done.refusal)
    flash(
        _(
            "Approved: the campaign and its link are live, and %(name)s has been told.",
            name=found.partner.user.name,
        ),
        "success",
    )
    return redirect(url_for("admin.show_campaign_request", request_id=found.id))


@bp.post("/campaign-requests/<int:request_id>/counter")
@operator_required
def counter_campaign_request(request_id: int):
    found = _get_request(request_id)
    form = CounterOfferForm()
    if not form.validate_on_submit():
        return _request_page(found, counter_form=form, status=422)
    with committing(write=True, flash_refusal=False) as done:
        campaign_requests.counter_offer(found, current_user, get_program(), form.rate.data_bp, form.note.data)
    if not done:
        return _refused(found, done.refusal, counter_form=form)
    flash(_("Counter-offer sent to %(name)s.", name=found.partner.user.name), "success")
    return redirect(url_for("admin.show_campaign_request", request_id=found.id))


@bp.post("/campaign-requests/<int:request_id>/decline")
@operator_required
def decline_campaign_request(request_id: int):
    found = _get_request(request_id)
    form = DeclineRequestForm()
    if not form.validate_on_submit():
        return _request_page(found, decline_form=form, status=422)
    with committing(write=True, flash_refusal=False) as done:
        campaign_requests.decline_request(found, current_user, form.reason.data)
    if not done:
        return _refused(found, done.refusal, decline_form=form)
    flash(_("Request declined; %(name)s has been told why.", name=found.partner.user.name), "success")
    return redirect(url_for("admin.show_campaign_request", request_id=found.id))

"""Operator console: the team inbox (threads with partners, replies, new conversations)."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import DataRequired

from portal.blueprints.admin import bp
from portal.extensions import db
from portal.forms import TextAreaField, at_most
from portal.models import Partner, Thread
from portal.security import operator_required
from portal.services import campaign_requests, inbox
from portal.views import committing, render_page_or_partial, thread_context

_message_body = [DataRequired(_l("Write a message first.")), at_most(10_000)]


_markdown_help = _l("**bold**, *italics*, [links](https://…), lists and `code` work.")


class ThreadReplyForm(FlaskForm):
    body = TextAreaField(_l("Your answer"), validators=_message_body, description=_markdown_help)


class NewMessageForm(FlaskForm):
    subject = StringField(
        _l("Subject"),
        validators=[DataRequired(_l("Give the conversation a subject.")), at_most(200)],
    )
    body = TextAreaField(_l("Message"), validators=_message_body, description=_markdown_help)


@bp.get("/inbox")
@operator_required
def list_threads():
    mine = request.args.get("mine") == "1"
    return render_page_or_partial(
        "admin/inbox.html",
        "admin/_partials/_inbox_list.html",
        rows=inbox.operator_threads(current_user, mine_only=mine),
        mine=mine,
    )


@bp.get("/inbox/unread")
@operator_required
def unread_badge():
    return render_template("_partials/_unread_badge.html", unread=inbox.team_unread_count())


def _thread_page(thread, form: ThreadReplyForm, status: int = 200):
    with committing():
        inbox.mark_read_by_team(thread)
    body = render_page_or_partial(
        "admin/thread.html",
        "_partials/_thread_messages.html",
        **thread_context(thread, url_for("admin.show_thread", thread_id=thread.id)),
        campaign_request=campaign_requests.request_of_thread(thread.id),
        form=form,
    )
    return body, status


@bp.get("/inbox/<int:thread_id>")
@operator_required
def show_thread(thread_id: int):
    return _thread_page(db.get_or_404(Thread, thread_id), ThreadReplyForm(formdata=None))


@bp.post("/inbox/<int:thread_id>")
@operator_required
def reply_thread(thread_id: int):
    thread = db.get_or_404(Thread, thread_id)
    form = ThreadReplyForm()
    if form.validate_on_submit():
        with committing(form) as done:
            inbox.reply(thread, current_user, form.body.data)
        if done:
            flash(_("Answer sent to %(name)s.", name=thread.partner.user.name), "success")
            return redirect(url_for("admin.show_thread", thread_id=thread.id, _anchor="reply"))
    return _thread_page(thread, form, 422)


def _send_first_message(partner: Partner, form: NewMessageForm):
    """Start a thread from a submitted form: the redirect to it, or None (errors on the form)."""
    if form.validate_on_submit():
        with committing(form) as done:
            thread = inbox.start_thread(partner, current_user, form.subject.data, form.body.data)
        if done:
            flash(_("Message sent to %(name)s.", name=partner.user.name), "success")
            return redirect(url_for("admin.show_thread", thread_id=thread.id))
    return None


@bp.route("/inbox/new/<int:partner_id>", methods=["GET", "POST"])
@operator_required
def new_thread(partner_id: int):
    """A new conversation with one partner (the dashboard's "Message" on a partner at risk)."""
    partner = db.get_or_404(Partner, partner_id)
    if request.method == "GET":
        subject = (request.args.get("subject") or "")[:200]
        form = NewMessageForm(formdata=None, subject=subject)
        return render_template("admin/new_thread.html", partner=partner, form=form)
    form = NewMessageForm()
    sent = _send_first_message(partner, form)
    if sent is not None:
        return sent
    return render_template("admin/new_thread.html", partner=partner, form=form), 422

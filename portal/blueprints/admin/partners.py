"""Operator console: applications, partners, their status, access, links, tags and manager."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import SelectField, StringField
from wtforms.validators import DataRequired

from portal.blueprints.admin import bp
from portal.blueprints.admin.inbox import NewMessageForm, _send_first_message
from portal.extensions import db
from portal.forms import ConfirmForm, TextAreaField, as_choices, at_most
from portal.models import Link, Partner, PartnerStatus, User
from portal.security import admin_required, operator_required
from portal.services import accounts, announcements, inbox, links, partners
from portal.views import committing, render_page_or_partial

_reason = [DataRequired(_l("Say why, so the partner knows.")), at_most(1000)]


class RejectForm(FlaskForm):
    reason = TextAreaField(
        _l("Reason shown to the applicant"),
        validators=[DataRequired(_l("Say why, so the applicant knows.")), at_most(1000)],
    )


class SuspendForm(FlaskForm):
    reason = TextAreaField(_l("Reason shown to the partner"), validators=_reason)


class SlugForm(FlaskForm):
    slug = StringField(
        _l("Custom code"),
        validators=[DataRequired(_l("Enter a code.")), at_most(64)],
        description=_l("Lower-case letters, digits and dashes, e.g. summer-sale."),
    )


class TagsForm(FlaskForm):
    tags = StringField(
        _l("Tags"),
        validators=[at_most(1000)],
        description=_l("Separated by commas, e.g. youtube, top-50. Use them to target announcements."),
    )


class ManagerForm(FlaskForm):
    manager = SelectField(_l("Manager"), coerce=int)

    def __init__(self, *args, operators=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.manager.choices = as_choices(
            [(0, _l("Nobody in particular"))] + [(u.id, u.name) for u in operators]
        )


@bp.get("/applications")
@operator_required
def applications():
    page = db.paginate(partners.partner_query(PartnerStatus.APPLIED), per_page=25, error_out=False)
    return render_template("admin/applications.html", page=page)


@bp.get("/partners")
@operator_required
def list_partners():
    status = request.args.get("status") or None
    if status not in (None, *PartnerStatus):
        status = None
    search = (request.args.get("q") or "").strip()[:100]
    tag = (request.args.get("tag") or "").strip()[:40] or None
    page = db.paginate(partners.partner_query(status, search, tag), per_page=25, error_out=False)
    return render_template(
        "admin/partners.html",
        page=page,
        status=status,
        search=search,
        tag=tag,
        tags=partners.all_tags(),
        counts=partners.count_by_status(),
    )


def _render_partner(
    partner: Partner,
    reject_form=None,
    suspend_form=None,
    status: int = 200,
    message_form=None,
    tags_form=None,
):
    context = {
        "partner": partner,
        "reject_form": reject_form or RejectForm(formdata=None),
        "suspend_form": suspend_form or SuspendForm(formdata=None),
        "confirm_form": ConfirmForm(formdata=None),
        "history": partners.partner_history(partner),
        "links": links.links_of(partner),
        "slug_form": SlugForm(formdata=None),
        "message_form": message_form or NewMessageForm(formdata=None),
        "tags_form": tags_form or TagsForm(formdata=None, tags=", ".join(t.name for t in partner.tags)),
        "manager_form": ManagerForm(
            formdata=None, operators=partners.operators(), manager=partner.manager_id or 0
        ),
        "threads": inbox.operator_threads_of(partner),
    }
    body = render_page_or_partial(
        "admin/partner_detail.html", "admin/_partials/_partner_review.html", **context
    )
    return body, status


@bp.get("/partners/<int:partner_id>")
@operator_required
def show_partner(partner_id: int):
    return _render_partner(db.get_or_404(Partner, partner_id))


def _change_status(partner_id: int, action, form_cls=None, success: str = ""):
    partner = db.get_or_404(Partner, partner_id)
    form = (form_cls or ConfirmForm)()
    forms = {}
    if form_cls is RejectForm:
        forms["reject_form"] = form
    elif form_cls is SuspendForm:
        forms["suspend_form"] = form
    if form.validate_on_submit():
        with committing(form, flash_refusal=not hasattr(form, "reason")) as done:
            if form_cls is None:
                action(partner, current_user)
            else:
                action(partner, current_user, form.reason.data)
        if done:
            flash(success % {"name": partner.user.name}, "success")
            if not request.htmx:
                return redirect(url_for("admin.show_partner", partner_id=partner.id))
            return _render_partner(partner)
    return _render_partner(partner, status=422, **forms)


@bp.post("/partners/<int:partner_id>/approve")
@operator_required
def approve_partner(partner_id: int):
    return _change_status(partner_id, accounts.approve_partner, success=_("%(name)s is approved."))


@bp.post("/partners/<int:partner_id>/reject")
@operator_required
def reject_partner(partner_id: int):
    return _change_status(partner_id, accounts.reject_partner, RejectForm, _("%(name)s was not accepted."))


@bp.post("/partners/<int:partner_id>/suspend")
@operator_required
def suspend_partner(partner_id: int):
    return _change_status(partner_id, accounts.suspend_partner, SuspendForm, _("%(name)s is suspended."))


@bp.post("/partners/<int:partner_id>/reinstate")
@operator_required
def reinstate_partner(partner_id: int):
    return _change_status(partner_id, accounts.reinstate_partner, success=_("%(name)s is active again."))


@bp.post("/partners/<int:partner_id>/access/<any(activate, deactivate):action>")
@admin_required
def set_partner_access(partner_id: int, action: str):
    """Switch a partner's sign-in off (every session of theirs ends) or back on."""
    partner = db.get_or_404(Partner, partner_id)
    if ConfirmForm().validate_on_submit():
        with committing() as done:
            accounts.set_user_active(current_user, partner.user, action == "activate")
        if done:
            flash(_("Access updated for %(name)s.", name=partner.user.name), "success")
    return redirect(url_for("admin.show_partner", partner_id=partner.id))


@bp.post("/links/<int:link_id>/slug")
@admin_required
def grant_slug(link_id: int):
    link = db.get_or_404(Link, link_id)
    form = SlugForm()
    if form.validate_on_submit():
        with committing(flash_refusal=False) as done:
            links.grant_custom_slug(link, current_user, form.slug.data)
        if not done:
            flash(_("Custom code not saved: %(why)s", why=done.refusal.message), "error")
        else:
            flash(_("The link now uses the code “%(code)s”.", code=link.code), "success")
    else:
        flash(_("Custom code not saved: %(why)s", why=" ".join(str(e) for e in form.slug.errors)), "error")
    return redirect(url_for("admin.show_partner", partner_id=link.partner_id))


@bp.post("/partners/<int:partner_id>/messages")
@operator_required
def start_thread(partner_id: int):
    partner = db.get_or_404(Partner, partner_id)
    form = NewMessageForm()
    sent = _send_first_message(partner, form)
    if sent is not None:
        return sent
    return _render_partner(partner, status=422, message_form=form)


@bp.post("/partners/<int:partner_id>/tags")
@operator_required
def set_partner_tags(partner_id: int):
    partner = db.get_or_404(Partner, partner_id)
    form = TagsForm()
    if form.validate_on_submit():
        with committing(form) as done:
            partners.set_partner_tags(partner, current_user, announcements.split_list(form.tags.data))
        if done:
            flash(_("Tags saved."), "success")
            return redirect(url_for("admin.show_partner", partner_id=partner.id))
    return _render_partner(partner, status=422, tags_form=form)


@bp.post("/partners/<int:partner_id>/manager")
@operator_required
def assign_manager(partner_id: int):
    partner = db.get_or_404(Partner, partner_id)
    form = ManagerForm(operators=partners.operators())
    if form.validate_on_submit():
        manager = db.session.get(User, form.manager.data) if form.manager.data else None
        with committing() as done:
            partners.assign_manager(partner, current_user, manager)
        if done:
            flash(_("Manager saved."), "success")
    else:
        flash(_("Choose a manager from the list."), "error")
    return redirect(url_for("admin.show_partner", partner_id=partner.id))

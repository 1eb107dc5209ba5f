"""Operator console: dashboard, applications, partners, settings, team."""

from __future__ import annotations

import sqlalchemy as sa
from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from portal.blueprints.admin import bp
from portal.blueprints.admin.forms import (
    ConfirmForm,
    RejectForm,
    SettingsForm,
    SuspendForm,
    TeamMemberForm,
)
from portal.errors import DomainError
from portal.extensions import db
from portal.forms import put_error_on_form
from portal.mail import MailError
from portal.models import OPERATOR_ROLES, Partner, PartnerStatus, Role, User
from portal.security import admin_required, operator_required
from portal.services import accounts, partners
from portal.services.program import get_program, update_program_settings
from portal.views import render_page_or_partial


@bp.get("/")
@operator_required
def dashboard():
    program = get_program()
    return render_template(
        "admin/dashboard.html",
        program=program,
        counts=partners.count_by_status(),
        needs_setup=not program.default_landing_url,
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
    page = db.paginate(partners.partner_query(status, search), per_page=25, error_out=False)
    return render_template(
        "admin/partners.html",
        page=page,
        status=status,
        search=search,
        counts=partners.count_by_status(),
    )


def _get_partner(partner_id: int) -> Partner:
    partner = db.session.get(Partner, partner_id)
    if partner is None:
        abort(404)
    return partner


def _render_partner(partner: Partner, reject_form=None, suspend_form=None, status: int = 200):
    context = {
        "partner": partner,
        "reject_form": reject_form or RejectForm(formdata=None),
        "suspend_form": suspend_form or SuspendForm(formdata=None),
        "confirm_form": ConfirmForm(formdata=None),
        "history": partners.partner_history(partner),
    }
    body = render_page_or_partial(
        "admin/partner_detail.html", "admin/_partials/_partner_review.html", **context
    )
    return body, status


@bp.get("/partners/<int:partner_id>")
@operator_required
def show_partner(partner_id: int):
    return _render_partner(_get_partner(partner_id))


def _change_status(partner_id: int, action, form_cls=None, success: str = ""):
    partner = _get_partner(partner_id)
    form = (form_cls or ConfirmForm)()
    forms = {}
    if form_cls is RejectForm:
        forms["reject_form"] = form
    elif form_cls is SuspendForm:
        forms["suspend_form"] = form
    if form.validate_on_submit():
        try:
            if form_cls is None:
                action(partner, current_user)
            else:
                action(partner, current_user, form.reason.data)
        except DomainError as error:
            db.session.rollback()
            put_error_on_form(form, error)
            if not hasattr(form, "reason"):
                flash(error.message, "error")
        else:
            db.session.commit()
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


@bp.route("/settings", methods=["GET", "POST"])
@admin_required
def settings():
    program = get_program()
    form = SettingsForm() if request.method == "POST" else SettingsForm.from_program(program)
    if form.validate_on_submit():
        try:
            update_program_settings(program, current_user, form.to_settings(program))
        except DomainError as error:
            db.session.rollback()
            put_error_on_form(form, error)
        else:
            db.session.commit()
            flash(_("Settings saved."), "success")
            return redirect(url_for("admin.settings"))
    status = 200 if request.method == "GET" else 422
    return render_template("admin/settings.html", form=form, program=program), status


def _team() -> list[User]:
    return list(
        db.session.scalars(
            sa.select(User).where(User.role.in_([r.value for r in OPERATOR_ROLES])).order_by(User.name)
        )
    )


@bp.route("/team", methods=["GET", "POST"])
@admin_required
def team():
    form = TeamMemberForm()
    if form.validate_on_submit():
        try:
            user = accounts.invite_operator(
                current_user,
                form.email.data,
                form.name.data,
                Role(form.role.data),
                lambda token: url_for("auth.reset_password", token=token, _external=True),
            )
        except DomainError as error:
            db.session.rollback()
            put_error_on_form(form, error)
        except MailError:
            db.session.rollback()
            form.form_errors.append(
                _("The invitation e-mail could not be sent, so nobody was added. Try again.")
            )
        else:
            db.session.commit()
            flash(
                _("%(name)s is invited; they will get an e-mail to set a password.", name=user.name),
                "success",
            )
            return redirect(url_for("admin.team"))
    status = 200 if request.method == "GET" else 422
    return render_template(
        "admin/team.html", form=form, team=_team(), confirm_form=ConfirmForm(formdata=None)
    ), status


@bp.post("/team/<int:user_id>/<any(activate, deactivate):action>")
@admin_required
def set_team_member_active(user_id: int, action: str):
    user = db.session.get(User, user_id)
    if user is None or not user.is_operator:
        abort(404)
    if ConfirmForm().validate_on_submit():
        try:
            accounts.set_user_active(current_user, user, action == "activate")
        except DomainError as error:
            db.session.rollback()
            flash(error.message, "error")
        else:
            db.session.commit()
            flash(_("Access updated for %(name)s.", name=user.name), "success")
    return redirect(url_for("admin.team"))

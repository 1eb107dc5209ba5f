"""Operator console: the wording of the automatic messages (welcome, first conversion, ...)."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import BooleanField, IntegerField, StringField
from wtforms.validators import DataRequired, NumberRange, Optional

from portal.blueprints.admin import bp
from portal.blueprints.admin.inbox import _markdown_help
from portal.errors import DomainError
from portal.forms import ConfirmForm, TextAreaField, at_most
from portal.models import AutomaticKind
from portal.security import operator_required
from portal.services import lifecycle
from portal.views import committing


class TemplateForm(FlaskForm):
    enabled = BooleanField(_l("Send this message automatically"))
    subject = StringField(
        _l("Subject"),
        validators=[DataRequired(_l("Write a subject.")), at_most(200)],
    )
    body = TextAreaField(
        _l("Message"),
        validators=[DataRequired(_l("Write the message.")), at_most(10_000)],
        description=_markdown_help,
    )
    quiet_days = IntegerField(
        _l("Days without a click before the wake-up"),
        validators=[Optional(), NumberRange(1, 365, _l("From %(min)s to %(max)s days."))],
    )


@bp.get("/automatic-messages")
@operator_required
def list_templates():
    with committing():  # the built-in wording is saved on first view
        templates = lifecycle.all_templates()
    return render_template("admin/templates.html", templates=templates, kind_label=lifecycle.kind_label)


def _template_preview(kind: str, subject: str, body: str) -> tuple[str, str] | None:
    try:
        lifecycle.check_template(kind, subject, "subject")
        lifecycle.check_template(kind, body, "body")
    except DomainError:
        return None
    values = lifecycle.preview_values(kind)
    return lifecycle.render(kind, subject, values, markdown=False), lifecycle.render(kind, body, values)


@bp.route("/automatic-messages/<kind>", methods=["GET", "POST"])
@operator_required
def edit_template(kind: str):
    if kind not in set(AutomaticKind):
        abort(404)
    with committing():  # the built-in wording is saved on first use
        template = lifecycle.get_template(kind)
    form = TemplateForm(obj=template) if request.method == "GET" else TemplateForm()
    if form.validate_on_submit():
        change = lifecycle.TemplateChange(
            enabled=form.enabled.data,
            subject=form.subject.data,
            body=form.body.data,
            quiet_days=form.quiet_days.data,
        )
        with committing(form) as done:
            lifecycle.save_template(kind, current_user, change)
        if done:
            flash(_("“%(name)s” saved.", name=lifecycle.kind_label(kind)), "success")
            return redirect(url_for("admin.edit_template", kind=kind))
    status = 200 if request.method == "GET" else 422
    return render_template(
        "admin/template_form.html",
        form=form,
        kind=kind,
        label=lifecycle.kind_label(kind),
        variables=lifecycle.variables_for(kind),
        preview=_template_preview(kind, form.subject.data or "", form.body.data or "")
        if status == 200
        else None,
        confirm_form=ConfirmForm(formdata=None),
    ), status


@bp.post("/automatic-messages/<kind>/reset")
@operator_required
def reset_template(kind: str):
    if kind not in set(AutomaticKind):
        abort(404)
    if ConfirmForm().validate_on_submit():
        with committing() as done:
            lifecycle.reset_template(kind, current_user)
        if done:
            flash(_("The built-in wording is back."), "success")
    return redirect(url_for("admin.edit_template", kind=kind))

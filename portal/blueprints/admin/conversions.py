"""Operator console: the conversions list and the review of one conversion."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import SelectField
from wtforms.validators import DataRequired, Optional

from portal.blueprints.admin import bp
from portal.extensions import db
from portal.forms import ConfirmForm, TextAreaField, as_choices, at_most
from portal.models import Conversion, ConversionStatus
from portal.security import operator_required
from portal.services import payouts, reports, tracking
from portal.services.commissions import commission_summary
from portal.services.program import get_program
from portal.services.tracking import reason_label
from portal.views import committing


class ConversionRejectForm(FlaskForm):
    reason = SelectField(_l("Reason"), validators=[DataRequired(_l("Choose a reason."))])
    note = TextAreaField(
        _l("Note for the partner"),
        validators=[Optional(), at_most(1000)],
        description=_l("Required when the reason is “other”."),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from portal.models import RejectionReason
        from portal.services.tracking import reason_label

        self.reason.choices = as_choices(
            [("", _l("Choose…"))] + [(r.value, reason_label(r)) for r in RejectionReason]
        )


@bp.get("/conversions")
@operator_required
def list_conversions():
    status = request.args.get("status") or None
    if status not in (None, *ConversionStatus):
        status = None
    unattributed = request.args.get("unattributed") == "1"
    search = (request.args.get("q") or "").strip()[:128]
    page = db.paginate(reports.conversion_query(status, unattributed, search), per_page=50, error_out=False)
    return render_template(
        "admin/conversions.html",
        page=page,
        status=status,
        unattributed=unattributed,
        search=search,
        counts=reports.count_conversions_by_status(),
        summary=commission_summary,
        reason_label=reason_label,
    )


def _conversion_page(conversion: Conversion, reject_form=None, status: int = 200):
    hold = payouts.hold_of(conversion.partner) if conversion.partner else None
    return (
        render_template(
            "admin/conversion.html",
            conversion=conversion,
            summary=commission_summary(conversion, hold),
            state=payouts.line_state,
            hold=hold,
            reason_label=reason_label,
            reject_form=reject_form or ConversionRejectForm(formdata=None),
            confirm_form=ConfirmForm(formdata=None),
        ),
        status,
    )


@bp.get("/conversions/<int:conversion_id>")
@operator_required
def show_conversion(conversion_id: int):
    return _conversion_page(db.get_or_404(Conversion, conversion_id))


@bp.post("/conversions/<int:conversion_id>/approve")
@operator_required
def approve_conversion(conversion_id: int):
    conversion = db.get_or_404(Conversion, conversion_id)
    if ConfirmForm().validate_on_submit():
        with committing() as done:
            tracking.approve_conversion(get_program(), conversion, current_user)
        if done:
            flash(_("Conversion %(id)s approved.", id=conversion.transaction_id), "success")
    return redirect(url_for("admin.show_conversion", conversion_id=conversion.id))


@bp.post("/conversions/<int:conversion_id>/reject")
@operator_required
def reject_conversion(conversion_id: int):
    conversion = db.get_or_404(Conversion, conversion_id)
    form = ConversionRejectForm()
    if form.validate_on_submit():
        with committing(form) as done:
            tracking.reject_conversion(conversion, current_user, form.reason.data, form.note.data)
        if done:
            flash(_("Conversion %(id)s rejected.", id=conversion.transaction_id), "success")
            return redirect(url_for("admin.show_conversion", conversion_id=conversion.id))
    return _conversion_page(conversion, form, 422)

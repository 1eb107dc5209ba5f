"""Operator console: partners' coupon codes (assign one, answer partners' requests, switch off)."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import DataRequired

from portal import urlcheck
from portal.blueprints.admin import bp
from portal.errors import DomainError
from portal.extensions import db
from portal.forms import ConfirmForm, at_most
from portal.models import Coupon, CouponStatus
from portal.security import operator_required
from portal.services import coupons
from portal.views import committing

STATUS_FILTERS = ("", *(s.value for s in CouponStatus))


class CouponForm(FlaskForm):
    code = StringField(
        _l("Code"),
        validators=[DataRequired(_l("Enter the code.")), at_most(40)],
        description=_l("3-40 letters A-Z, digits, - or _; shoppers may type it in any case."),
    )
    partner = StringField(
        _l("Partner's ref code"),
        validators=[DataRequired(_l("Enter the partner's ref code.")), at_most(32)],
    )


def _coupons_page(form: CouponForm, status: int = 200):
    shown = request.args.get("status", "")
    if shown not in STATUS_FILTERS:
        shown = ""
    return (
        render_template(
            "admin/coupons.html",
            form=form,
            coupons=coupons.all_coupons(shown or None),
            shown=shown,
            filters=STATUS_FILTERS,
            waiting=coupons.requested_count(),
            confirm_form=ConfirmForm(formdata=None),
        ),
        status,
    )


@bp.get("/coupons")
@operator_required
def list_coupons():
    return _coupons_page(CouponForm(formdata=None))


@bp.post("/coupons")
@operator_required
def add_coupon():
    form = CouponForm()
    if form.validate_on_submit():
        with committing(form) as done:
            partner = coupons.partner_with_ref(form.partner.data)
            if partner is None:
                raise DomainError(_("No partner has this ref code."), "partner")
            coupon = coupons.add_coupon(partner, form.code.data, current_user)
        if done:
            flash(
                _("Code %(code)s now attributes sales to %(ref)s.", code=coupon.code, ref=partner.ref_code),
                "success",
            )
            return redirect(url_for("admin.list_coupons"))
    return _coupons_page(form, 422)


@bp.post("/coupons/<int:coupon_id>/<any(approve, decline, enable, disable):action>")
@operator_required
def decide_coupon(coupon_id: int, action: str):
    coupon = db.get_or_404(Coupon, coupon_id)
    code = coupon.code
    if ConfirmForm().validate_on_submit():
        with committing() as done:
            if action == "approve":
                coupons.approve_coupon(coupon, current_user)
            elif action == "decline":
                coupons.decline_coupon(coupon, current_user)
            else:
                coupons.set_coupon_active(coupon, action == "enable", current_user)
        if done:
            flash(_decided(action, code), "success")
    return redirect(_back_to_the_list())


def _decided(action: str, code: str) -> str:
    if action == "approve":
        return _("Code %(code)s approved: it attributes sales from now on.", code=code)
    if action == "decline":
        return _("Request for %(code)s declined; the code is free again.", code=code)
    if action == "enable":
        return _("Code %(code)s switched on.", code=code)
    return _("Code %(code)s switched off: it attributes nothing until switched on.", code=code)


def _back_to_the_list() -> str:
    """The coupon list as the operator left it (its filters, from the Referer), or the list:
    only this site's own list address is followed (``urlcheck.safe_next``), never another."""
    own = url_for("admin.list_coupons")
    origin = request.host_url.rstrip("/")
    referrer = request.referrer or ""
    if referrer.startswith(origin + "/"):
        back = urlcheck.safe_next(referrer[len(origin) :])
        if back is not None and urlsplit(back).path == own:
            return back
    return own

"""Operator console: dashboard, applications, partners, conversions, payouts, settings, team."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from portal.blueprints.admin import bp
from portal.blueprints.admin.forms import (
    ApiKeyForm,
    ConfirmForm,
    ConversionRejectForm,
    FailureForm,
    PaymentForm,
    RejectForm,
    SettingsForm,
    SlugForm,
    SuspendForm,
    TeamMemberForm,
)
from portal.database import begin_write
from portal.errors import DomainError
from portal.extensions import db
from portal.forms import put_error_on_form
from portal.mail import MailError
from portal.models import (
    OPERATOR_ROLES,
    ApiKey,
    Conversion,
    ConversionStatus,
    ItemStatus,
    Link,
    Partner,
    PartnerStatus,
    PayoutBatch,
    PayoutItem,
    Role,
    User,
)
from portal.models.types import utcnow
from portal.security import admin_required, operator_required
from portal.services import accounts, api_keys, dashboards, links, partners, payouts, reports, tracking
from portal.services.audit import record_event
from portal.services.commissions import commission_summary
from portal.services.program import get_program, update_program_settings
from portal.services.tracking import reason_label
from portal.views import dashboard_range, render_page_or_partial


@bp.get("/")
@operator_required
def dashboard():
    program = get_program()
    form, rng, today = dashboard_range(program)
    board = dashboards.program_dashboard(rng, today, program.timezone)
    db.session.commit()  # keeps the partner trends it recounted (a cache), before rendering
    return render_page_or_partial(
        "admin/dashboard.html",
        "admin/_partials/_dashboard.html",
        program=program,
        form=form,
        counts=partners.count_by_status(),
        needs_setup=not program.default_landing_url,
        board=board,
    )


@bp.get(f"/stats/<any({', '.join(dashboards.PROGRAM_TABLES)}):table>.csv")
@operator_required
def export_stats(table: str):
    program = get_program()
    _form, rng, today = dashboard_range(program)
    headers, rows = dashboards.program_table(rng, today, program.timezone, table, program.currency)
    db.session.commit()  # the partner trends it may have recounted
    name = f"{table}-{rng.start.isoformat()}-{rng.end.isoformat()}.csv"
    return Response(
        dashboards.to_csv(headers, rows),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
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
        "links": links.links_of(partner),
        "slug_form": SlugForm(formdata=None),
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


# --- conversions and review ---------------------------------------------------


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


def _get_conversion(conversion_id: int) -> Conversion:
    conversion = db.session.get(Conversion, conversion_id)
    if conversion is None:
        abort(404)
    return conversion


def _conversion_page(conversion: Conversion, reject_form=None, status: int = 200):
    return (
        render_template(
            "admin/conversion.html",
            conversion=conversion,
            summary=commission_summary(conversion),
            reason_label=reason_label,
            reject_form=reject_form or ConversionRejectForm(formdata=None),
            confirm_form=ConfirmForm(formdata=None),
        ),
        status,
    )


@bp.get("/conversions/<int:conversion_id>")
@operator_required
def show_conversion(conversion_id: int):
    return _conversion_page(_get_conversion(conversion_id))


@bp.post("/conversions/<int:conversion_id>/approve")
@operator_required
def approve_conversion(conversion_id: int):
    conversion = _get_conversion(conversion_id)
    if ConfirmForm().validate_on_submit():
        try:
            tracking.approve_conversion(get_program(), conversion, current_user)
        except DomainError as error:
            db.session.rollback()
            flash(error.message, "error")
        else:
            db.session.commit()
            flash(_("Conversion %(id)s approved.", id=conversion.transaction_id), "success")
    return redirect(url_for("admin.show_conversion", conversion_id=conversion.id))


@bp.post("/conversions/<int:conversion_id>/reject")
@operator_required
def reject_conversion(conversion_id: int):
    conversion = _get_conversion(conversion_id)
    form = ConversionRejectForm()
    if form.validate_on_submit():
        try:
            tracking.reject_conversion(conversion, current_user, form.reason.data, form.note.data)
        except DomainError as error:
            db.session.rollback()
            put_error_on_form(form, error)
        else:
            db.session.commit()
            flash(_("Conversion %(id)s rejected.", id=conversion.transaction_id), "success")
            return redirect(url_for("admin.show_conversion", conversion_id=conversion.id))
    return _conversion_page(conversion, form, 422)


# --- links ----------------------------------------------------------------------


@bp.post("/links/<int:link_id>/slug")
@admin_required
def grant_slug(link_id: int):
    link = db.session.get(Link, link_id)
    if link is None:
        abort(404)
    form = SlugForm()
    if form.validate_on_submit():
        try:
            links.grant_custom_slug(link, current_user, form.slug.data)
        except DomainError as error:
            db.session.rollback()
            flash(_("Custom code not saved: %(why)s", why=error.message), "error")
        else:
            db.session.commit()
            flash(_("The link now uses the code “%(code)s”.", code=link.code), "success")
    else:
        flash(_("Custom code not saved: %(why)s", why=" ".join(str(e) for e in form.slug.errors)), "error")
    return redirect(url_for("admin.show_partner", partner_id=link.partner_id))


# --- API keys and integration ------------------------------------------------------


@bp.route("/api-keys", methods=["GET", "POST"])
@admin_required
def api_keys_page():
    form = ApiKeyForm()
    new_key = None
    status = 200
    if form.validate_on_submit():
        try:
            _key, new_key = api_keys.create_api_key(form.name.data, current_user)
        except DomainError as error:
            db.session.rollback()
            put_error_on_form(form, error)
            status = 422
        else:
            db.session.commit()
            form = ApiKeyForm(formdata=None)
    elif request.method == "POST":
        status = 422
    return (
        render_template(
            "admin/api_keys.html",
            form=form,
            keys=api_keys.list_api_keys(),
            new_key=new_key,
            confirm_form=ConfirmForm(formdata=None),
        ),
        status,
    )


@bp.post("/api-keys/<int:key_id>/revoke")
@admin_required
def revoke_api_key(key_id: int):
    key = db.session.get(ApiKey, key_id)
    if key is None:
        abort(404)
    if ConfirmForm().validate_on_submit():
        api_keys.revoke_api_key(key, current_user)
        db.session.commit()
        flash(_("Key “%(name)s” is revoked; requests with it now get 401.", name=key.name), "success")
    return redirect(url_for("admin.api_keys_page"))


@bp.get("/integration")
@operator_required
def integration_guide():
    program = get_program()
    demo_partner = db.session.scalars(
        sa.select(Partner).where(Partner.status == PartnerStatus.APPROVED).order_by(Partner.id).limit(1)
    ).first()
    return render_template(
        "admin/integration.html",
        program=program,
        api_base=url_for("auth.index", _external=True).rstrip("/") + "/api/v1",
        example_ref=demo_partner.ref_code if demo_partner else "CODE",
        track_js=url_for("static", filename="js/track.js", _external=True),
    )


# --- payouts ----------------------------------------------------------------------------


@bp.get("/payouts")
@operator_required
def list_batches():
    page = db.paginate(
        sa.select(PayoutBatch).order_by(PayoutBatch.created_at.desc(), PayoutBatch.id.desc()),
        per_page=25,
        error_out=False,
    )
    program = get_program()
    return render_template(
        "admin/payouts.html",
        page=page,
        program=program,
        total=payouts.batch_total,
        confirm_form=ConfirmForm(formdata=None),
    )


@bp.post("/payouts/settle")
@operator_required
def run_settlement():
    if ConfirmForm().validate_on_submit():
        begin_write(db.session())
        batch, created = payouts.settle(get_program(), actor=current_user)
        db.session.commit()
        if batch is None:
            flash(_("Nobody has reached the minimum payout; balances carry over."), "info")
        elif created:
            flash(_("Payout batch for %(date)s built.", date=batch.period_end), "success")
            return redirect(url_for("admin.show_batch", batch_id=batch.id))
        else:
            flash(_("The batch for %(date)s already exists; nothing changed.", date=batch.period_end), "info")
            return redirect(url_for("admin.show_batch", batch_id=batch.id))
    return redirect(url_for("admin.list_batches"))


def _get_batch(batch_id: int) -> PayoutBatch:
    batch = db.session.get(PayoutBatch, batch_id)
    if batch is None:
        abort(404)
    return batch


def _batch_page(batch: PayoutBatch, payment_form=None, failure_form=None, status: int = 200):
    return (
        render_template(
            "admin/payout_batch.html",
            batch=batch,
            total=payouts.batch_total(batch),
            held=payouts.batch_total(batch, statuses=(ItemStatus.HELD,)),
            confirm_form=ConfirmForm(formdata=None),
            payment_form=payment_form or PaymentForm(formdata=None, paid_on=utcnow().date()),
            failure_form=failure_form or FailureForm(formdata=None),
        ),
        status,
    )


@bp.get("/payouts/<int:batch_id>")
@operator_required
def show_batch(batch_id: int):
    return _batch_page(_get_batch(batch_id))


@bp.post("/payouts/<int:batch_id>/approve")
@operator_required
def approve_batch(batch_id: int):
    batch = _get_batch(batch_id)
    if ConfirmForm().validate_on_submit():
        try:
            payouts.approve_batch(batch, current_user)
        except DomainError as error:
            db.session.rollback()
            flash(error.message, "error")
        else:
            db.session.commit()
            flash(_("Batch approved. Export the payment file or record payments."), "success")
    return redirect(url_for("admin.show_batch", batch_id=batch.id))


@bp.get("/payouts/<int:batch_id>/export.<any(csv, paypal):kind>")
@operator_required
def export_batch(batch_id: int, kind: str):
    batch = _get_batch(batch_id)
    try:
        body = payouts.export_paypal(batch) if kind == "paypal" else payouts.export_csv(batch)
    except DomainError as error:
        flash(error.message, "error")
        return redirect(url_for("admin.show_batch", batch_id=batch.id))
    record_event(current_user, "payout.batch_exported", "payout_batch", batch.id, kind=kind)
    db.session.commit()
    name = f"payout-{batch.period_end.isoformat()}-{batch.id}-{kind}.csv"
    return Response(
        body, mimetype="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


def _payment_action(batch_id: int, item_id: int | None, action: str):
    batch = _get_batch(batch_id)
    item = None
    if item_id is not None:
        item = db.session.get(PayoutItem, item_id)
        if item is None or item.batch_id != batch.id:
            abort(404)
    form = FailureForm() if action == "failed" else PaymentForm()
    if form.validate_on_submit():
        try:
            if action == "failed":
                payouts.mark_item_failed(item, current_user, form.reason.data)
            elif item is None:
                payouts.mark_batch_paid(batch, current_user, form.reference.data, form.paid_on.data)
            else:
                payouts.mark_item_paid(item, current_user, form.reference.data, form.paid_on.data)
        except DomainError as error:
            db.session.rollback()
            put_error_on_form(form, error)
        else:
            db.session.commit()
            flash(_("Recorded."), "success")
            return redirect(url_for("admin.show_batch", batch_id=batch.id))
    forms = {"failure_form": form} if action == "failed" else {"payment_form": form}
    if form.errors or form.form_errors:
        flash(
            _(
                "Not recorded: %(why)s",
                why=" ".join(str(e) for errs in form.errors.values() for e in errs)
                or " ".join(form.form_errors),
            ),
            "error",
        )
    return _batch_page(batch, status=422, **forms)


@bp.post("/payouts/<int:batch_id>/paid")
@operator_required
def mark_batch_paid(batch_id: int):
    return _payment_action(batch_id, None, "paid")


@bp.post("/payouts/<int:batch_id>/items/<int:item_id>/<any(paid, failed):action>")
@operator_required
def mark_item(batch_id: int, item_id: int, action: str):
    return _payment_action(batch_id, item_id, action)

"""Partner pages. Every query here is scoped to the signed-in partner."""

from __future__ import annotations

from flask import Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from portal.blueprints.partner import bp
from portal.blueprints.partner.forms import LinkForm, PayoutDetailsForm
from portal.database import begin_write
from portal.errors import DomainError
from portal.extensions import db
from portal.forms import ConfirmForm, put_error_on_form
from portal.models.types import utcnow
from portal.security import partner_required
from portal.services import dashboards, links, payouts, reports, schedule
from portal.services.commissions import commission_summary
from portal.services.program import get_program
from portal.services.tracking import reason_label
from portal.views import dashboard_range, render_page_or_partial


@bp.get("/")
@partner_required
def dashboard():
    partner = current_user.partner
    program = get_program()
    form, rng, _today = dashboard_range(program)
    return render_page_or_partial(
        "partner/dashboard.html",
        "partner/_partials/_dashboard.html",
        partner=partner,
        program=program,
        form=form,
        board=dashboards.partner_dashboard(partner.id, rng),
        earnings=payouts.earnings_of(partner.id),
    )


@bp.get(f"/stats/<any({', '.join(dashboards.PARTNER_TABLES)}):table>.csv")
@partner_required
def export_stats(table: str):
    partner = current_user.partner
    program = get_program()
    _form, rng, _today = dashboard_range(program)
    headers, rows = dashboards.partner_table(partner.id, rng, table, program.currency)
    name = f"{table}-{partner.ref_code}-{rng.start.isoformat()}-{rng.end.isoformat()}.csv"
    return Response(
        dashboards.to_csv(headers, rows),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _links_page(form: LinkForm, status: int = 200):
    partner = current_user.partner
    return (
        render_template(
            "partner/links.html",
            partner=partner,
            program=get_program(),
            links=links.links_of(partner),
            clicks=reports.click_counts(partner),
            form=form,
            confirm_form=ConfirmForm(formdata=None),
        ),
        status,
    )


@bp.get("/links")
@partner_required
def list_links():
    return _links_page(LinkForm(formdata=None))


@bp.post("/links")
@partner_required
def create_link():
    form = LinkForm()
    if form.validate_on_submit():
        try:
            link = links.create_link(
                current_user.partner,
                get_program(),
                label=form.label.data,
                channel=form.channel.data,
                destination_url=form.destination_url.data,
                campaign=form.campaign.data,
                sub_id=form.sub_id.data,
            )
        except DomainError as error:
            db.session.rollback()
            put_error_on_form(form, error)
        else:
            db.session.commit()
            flash(_("Link “%(label)s” is ready to share.", label=link.label), "success")
            return redirect(url_for("partner.list_links"))
    return _links_page(form, 422)


@bp.post("/links/<int:link_id>/<any(enable, disable):action>")
@partner_required
def toggle_link(link_id: int, action: str):
    link = reports.partner_link(current_user.partner, link_id)
    if link is None:
        abort(404)
    if ConfirmForm().validate_on_submit():
        links.set_link_active(link, action == "enable")
        db.session.commit()
        flash(_("Link switched on.") if link.active else _("Link switched off."), "success")
    return redirect(url_for("partner.list_links"))


@bp.get("/conversions")
@partner_required
def list_conversions():
    partner = current_user.partner
    page = db.paginate(reports.partner_conversions(partner), per_page=25, error_out=False)
    return render_template(
        "partner/conversions.html",
        partner=partner,
        page=page,
        summary=commission_summary,
        reason_label=reason_label,
    )


@bp.get("/conversions/<int:conversion_id>")
@partner_required
def show_conversion(conversion_id: int):
    conversion = reports.partner_conversion(current_user.partner, conversion_id)
    if conversion is None:
        abort(404)
    return render_template(
        "partner/conversion.html",
        conversion=conversion,
        summary=commission_summary(conversion),
        reason_label=reason_label,
        program=get_program(),
    )


# --- earnings and payouts --------------------------------------------------------------


def _earnings_context(partner):
    program = get_program()
    figures = payouts.earnings_of(partner.id)
    now = utcnow()
    settled = payouts.scheduled_batch_for(schedule.local_today(program, now)) is not None
    return {
        "partner": partner,
        "program": program,
        "figures": figures,
        "progress": min(100, max(0, figures.confirmed * 100 // max(program.minimum_payout_minor, 1))),
        "next_payout": schedule.upcoming_payout(program, now, settled),
        "ledger": payouts.ledger_of(partner.id),
        "state": payouts.ledger_state,
        "reason_label": reason_label,
        "account": payouts.account_of(partner),
        "can_withdraw": program.allow_withdrawals
        and figures.confirmed >= max(program.minimum_payout_minor, 1)
        and payouts.account_of(partner) is not None,
        "confirm_form": ConfirmForm(formdata=None),
    }


@bp.get("/earnings")
@partner_required
def earnings():
    context = _earnings_context(current_user.partner)
    return render_page_or_partial("partner/earnings.html", "partner/_partials/_earnings.html", **context)


@bp.get("/earnings.csv")
@partner_required
def earnings_csv():
    partner = current_user.partner
    return Response(
        payouts.ledger_csv(partner.id),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="earnings-{partner.ref_code}.csv"'},
    )


@bp.post("/earnings/withdraw")
@partner_required
def request_withdrawal():
    if ConfirmForm().validate_on_submit():
        try:
            begin_write(db.session())
            payouts.request_withdrawal(get_program(), current_user.partner)
        except DomainError as error:
            db.session.rollback()
            flash(error.message, "error")
        else:
            db.session.commit()
            flash(_("Payout requested. The program team will send it shortly."), "success")
    return redirect(url_for("partner.earnings"))


@bp.route("/payout-details", methods=["GET", "POST"])
@partner_required
def payout_details():
    partner = current_user.partner
    account = payouts.account_of(partner)
    if request.method == "POST":
        form = PayoutDetailsForm()
    else:
        form = PayoutDetailsForm(obj=account) if account else PayoutDetailsForm(formdata=None)
    if form.validate_on_submit():
        details = payouts.PayoutDetails(
            **{name: getattr(form, name).data for name in payouts.PayoutDetails.__dataclass_fields__}
        )
        try:
            payouts.save_payout_account(partner, details, current_user)
        except DomainError as error:
            db.session.rollback()
            put_error_on_form(form, error)
        else:
            db.session.commit()
            flash(_("Payout details saved."), "success")
            return redirect(url_for("partner.earnings"))
    status = 200 if request.method == "GET" else 422
    return render_template("partner/payout_details.html", form=form, partner=partner), status

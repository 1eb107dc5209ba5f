"""Partner pages. Every query here is scoped to the signed-in partner."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from portal.blueprints.partner import bp
from portal.blueprints.partner.forms import LinkForm
from portal.errors import DomainError
from portal.extensions import db
from portal.forms import ConfirmForm, put_error_on_form
from portal.models import CHANNELS, CreativeKind
from portal.security import partner_required
from portal.services import creative_stats, creatives, links, reports
from portal.services.commissions import commission_summary
from portal.services.program import get_program
from portal.services.tracking import reason_label
from portal.views import day_arg


@bp.get("/")
@partner_required
def dashboard():
    partner = current_user.partner
    return render_template("partner/dashboard.html", partner=partner, program=get_program())


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


# --- creatives ----------------------------------------------------------------------


def _library_filters() -> dict:
    args = request.args
    return {
        "channel": args.get("channel") if args.get("channel") in CHANNELS else None,
        "kind": args.get("kind") if args.get("kind") in set(CreativeKind) else None,
        "campaign": (args.get("campaign") or "").strip()[:64] or None,
        "language": (args.get("language") or "").strip()[:8] or None,
        "search": (args.get("q") or "").strip()[:100] or None,
    }


@bp.get("/creatives")
@partner_required
def list_creatives():
    filters = _library_filters()
    page = db.paginate(creatives.library_query(**filters), per_page=24, error_out=False)
    return render_template(
        "partner/creatives.html",
        partner=current_user.partner,
        page=page,
        filters=filters,
        kinds=list(CreativeKind),
        campaigns=creatives.campaigns_in_use(),
        languages=creatives.languages_in_use(),
    )


@bp.get("/creatives/<int:creative_id>")
@partner_required
def show_creative(creative_id: int):
    creative = creatives.published_creative(creative_id)
    if creative is None:
        abort(404)
    partner = current_user.partner
    link = url_for("track.follow_link", code=partner.ref_code, creative=creative.id, _external=True)
    image_url = None
    if creative.kind == CreativeKind.BANNER:
        image_url = url_for("media.banner_image", creative_id=creative.id, _external=True)
    return render_template(
        "partner/creative.html",
        partner=partner,
        creative=creative,
        code=creatives.code_for(creative, link=link, image_url=image_url),
        download_name=creatives.download_name(creative) if creative.current.file_key else None,
    )


@bp.get("/creatives/stats")
@partner_required
def show_creative_stats():
    partner = current_user.partner
    program = get_program()
    period = creative_stats.period(day_arg("from"), day_arg("to"), program.timezone)
    return render_template(
        "partner/creative_stats.html",
        partner=partner,
        program=program,
        period=period,
        report=creative_stats.creative_report(period, partner_id=partner.id),
        best=creative_stats.best_in_channels(period, partner.channels or []),
        min_clicks=creative_stats.MIN_PROGRAM_CLICKS,
        min_partners=creative_stats.MIN_PROGRAM_PARTNERS,
    )

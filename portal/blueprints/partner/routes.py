"""Partner pages. Every query here is scoped to the signed-in partner."""

from __future__ import annotations

from flask import Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from portal.blueprints.partner import bp
from portal.blueprints.partner.forms import (
    CampaignRequestForm,
    CouponRequestForm,
    DeclineOfferForm,
    LinkForm,
    NewThreadForm,
    PayoutDetailsForm,
    ReplyForm,
    preferences_form,
)
from portal.extensions import db
from portal.forms import ConfirmForm
from portal.models import CHANNELS, CreativeKind, PartnerStatus
from portal.models.types import utcnow
from portal.security import partner_required
from portal.services import (
    announcements,
    campaign_requests,
    coupons,
    creative_stats,
    creatives,
    dashboards,
    delivery,
    inbox,
    links,
    onboarding,
    partners,
    payout_outlook,
    payouts,
    reports,
)
from portal.services.commissions import commission_summary
from portal.services.program import get_program
from portal.services.rewards_overview import rewards_overview
from portal.services.tracking import reason_label
from portal.views import (
    campaign_request_context,
    committing,
    dashboard_range,
    day_arg,
    render_page_or_partial,
    thread_context,
)


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
        terms=partners.terms_of(partner, program),
        checklist=onboarding.checklist_to_show(partner),
        partner_link=url_for("track.follow_link", code=partner.ref_code, _external=True),
        **_money_context(partner, program),
        **_news_context(partner),
    )


def _money_context(partner, program) -> dict:
    figures = payouts.earnings_of(partner.id)
    return {
        "earnings": figures,
        "outlook": payout_outlook.next_payout_of(program, partner, figures=figures),
    }


def _news_context(partner) -> dict:
    return {
        "announcements": announcements.partner_announcements(partner, limit=3, pinned_or_unread=True),
        "threads": [row for row in inbox.partner_threads(partner, limit=5) if row.unread][:3],
        "unread": inbox.partner_unread_count(partner),
    }


@bp.get("/dashboard/news")
@partner_required
def dashboard_news():
    """The dashboard's news and unread messages: re-fetched live when a message or announcement lands."""
    return render_template("partner/_partials/_dashboard_news.html", **_news_context(current_user.partner))


@bp.get("/dashboard/money")
@partner_required
def dashboard_money():
    """The dashboard's next payout and balances: re-fetched live when a sale or payout changes them."""
    partner = current_user.partner
    program = get_program()
    return render_template(
        "partner/_partials/_dashboard_money.html", program=program, **_money_context(partner, program)
    )


@bp.post(f"/onboarding/<any({', '.join(onboarding.RECORDED_STEPS)}):step>")
@partner_required
def record_onboarding_step(step: str):
    """A copy button or download said the partner grabbed their link or a creative (checklist)."""
    with committing(write=True):
        onboarding.record_step(current_user.partner, step)
    return "", 204


@bp.get("/terms")
@partner_required
def program_terms():
    partner = current_user.partner
    program = get_program()
    if partner.terms_read_at is None:
        with committing(write=True):
            onboarding.record_step(partner, onboarding.Step.READ_TERMS)
    return render_template(
        "partner/terms.html",
        partner=partner,
        program=program,
        terms=partners.terms_of(partner, program),
        next_date=payout_outlook.next_payout_date(program, utcnow()),
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


def _links_page(form: LinkForm, status: int = 200, coupon_form: CouponRequestForm | None = None):
    partner = current_user.partner
    return (
        render_template(
            "partner/links.html",
            partner=partner,
            program=get_program(),
            links=links.links_of(partner),
            suspended=partner.status == PartnerStatus.SUSPENDED,
            clicks=reports.click_counts(partner),
            form=form,
            confirm_form=ConfirmForm(formdata=None),
            coupons=coupons.coupons_of(partner),
            coupon_form=coupon_form or CouponRequestForm(formdata=None),
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
        with committing(form) as done:
            link = links.create_link(
                current_user.partner,
                get_program(),
                label=form.label.data,
                channel=form.channel.data,
                destination_url=form.destination_url.data,
                campaign=form.campaign.data,
                sub_id=form.sub_id.data,
            )
        if done:
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
        with committing() as done:
            links.set_link_active(link, action == "enable")
        if done:
            flash(_("Link switched on.") if link.active else _("Link switched off."), "success")
    return redirect(url_for("partner.list_links"))


@bp.post("/coupons")
@partner_required
def request_coupon():
    form = CouponRequestForm()
    if form.validate_on_submit():
        with committing(form) as done:
            coupon = coupons.request_coupon(current_user.partner, form.code.data, form.note.data)
        if done:
            flash(
                _("You asked for %(code)s; the program team will answer soon.", code=coupon.code), "success"
            )
            return redirect(url_for("partner.list_links", _anchor="coupons"))
    return _links_page(LinkForm(formdata=None), 422, coupon_form=form)


@bp.get("/conversions")
@partner_required
def list_conversions():
    partner = current_user.partner
    page = db.paginate(reports.partner_conversions(partner), per_page=25, error_out=False)
    hold = payouts.hold_of(partner)
    return render_template(
        "partner/conversions.html",
        partner=partner,
        page=page,
        summary=lambda conversion: commission_summary(conversion, hold),
        reason_label=reason_label,
    )


@bp.get("/conversions/<int:conversion_id>")
@partner_required
def show_conversion(conversion_id: int):
    conversion = reports.partner_conversion(current_user.partner, conversion_id)
    if conversion is None:
        abort(404)
    hold = payouts.hold_of(current_user.partner)
    return render_template(
        "partner/conversion.html",
        conversion=conversion,
        summary=commission_summary(conversion, hold),
        state=payouts.line_state,
        hold=hold,
        reason_label=reason_label,
        program=get_program(),
    )


# --- inbox --------------------------------------------------------------------------------


def _inbox_page(form: NewThreadForm, status: int = 200):
    partner = current_user.partner
    body = render_page_or_partial(
        "partner/inbox.html",
        "partner/_partials/_inbox_list.html",
        partner=partner,
        threads=inbox.partner_threads(partner),
        announcements=announcements.partner_announcements(partner),
        form=form,
    )
    return body, status


@bp.get("/inbox")
@partner_required
def list_threads():
    return _inbox_page(NewThreadForm(formdata=None))


@bp.post("/inbox")
@partner_required
def start_thread():
    form = NewThreadForm()
    if form.validate_on_submit():
        with committing(form) as done:
            thread = inbox.start_thread(current_user.partner, current_user, form.subject.data, form.body.data)
        if done:
            flash(_("Message sent. The team will answer here."), "success")
            return redirect(url_for("partner.show_thread", thread_id=thread.id))
    return _inbox_page(form, 422)


def _thread_page(thread, form: ReplyForm, status: int = 200):
    with committing():
        inbox.mark_read_by_partner(thread)
    body = render_page_or_partial(
        "partner/thread.html",
        "_partials/_thread_messages.html",
        **thread_context(thread, url_for("partner.show_thread", thread_id=thread.id)),
        campaign_request=campaign_requests.request_of_thread(thread.id),
        form=form,
    )
    return body, status


def _own_thread(thread_id: int):
    thread = inbox.partner_thread(current_user.partner, thread_id)
    if thread is None:
        abort(404)
    return thread


@bp.get("/inbox/<int:thread_id>")
@partner_required
def show_thread(thread_id: int):
    return _thread_page(_own_thread(thread_id), ReplyForm(formdata=None))


@bp.post("/inbox/<int:thread_id>")
@partner_required
def reply_thread(thread_id: int):
    thread = _own_thread(thread_id)
    form = ReplyForm()
    if form.validate_on_submit():
        with committing(form) as done:
            inbox.reply(thread, current_user, form.body.data)
        if done:
            return redirect(url_for("partner.show_thread", thread_id=thread.id, _anchor="reply"))
    return _thread_page(thread, form, 422)


@bp.get("/inbox/unread")
@partner_required
def unread_badge():
    return render_template(
        "_partials/_unread_badge.html", unread=inbox.partner_unread_count(current_user.partner)
    )


@bp.get("/announcements/<int:announcement_id>")
@partner_required
def show_announcement(announcement_id: int):
    partner = current_user.partner
    found = announcements.partner_announcement(partner, announcement_id)
    if found is None:
        abort(404)
    with committing():
        announcements.mark_read(partner, found.announcement)
    return render_template("partner/announcement.html", announcement=found.announcement)


@bp.route("/preferences", methods=["GET", "POST"])
@partner_required
def preferences():
    partner = current_user.partner
    current = delivery.email_preferences(partner)
    form = preferences_form(current, formdata=request.form if request.method == "POST" else None)
    if form.validate_on_submit():
        with committing() as done:
            delivery.update_email_preferences(partner, {kind: form[f"email_{kind}"].data for kind in current})
        if done:
            flash(_("E-mail preferences saved."), "success")
        return redirect(url_for("partner.preferences"))
    status = 200 if request.method == "GET" else 422
    return render_template("partner/preferences.html", form=form, kinds=list(current)), status


# --- earnings and payouts --------------------------------------------------------------


def _earnings_context(partner):
    program = get_program()
    figures = payouts.earnings_of(partner.id)
    suspended = partner.status == PartnerStatus.SUSPENDED
    withdrawal = payout_outlook.withdrawal_of(program, partner, figures)
    return {
        "partner": partner,
        "program": program,
        "figures": figures,
        "progress": min(100, max(0, figures.confirmed * 100 // max(program.minimum_payout_minor, 1))),
        "outlook": payout_outlook.next_payout_of(program, partner, figures=figures),
        "ledger": payouts.ledger_of(partner.id),
        "state": payouts.line_state,
        "hold": payouts.hold_of(partner),
        "held_items": payouts.held_items_of(partner),
        "suspended": suspended,
        "reason_label": reason_label,
        "account": payouts.account_of(partner),
        "withdrawal": withdrawal,
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
        with committing(write=True) as done:
            payouts.request_withdrawal(get_program(), current_user.partner)
        if done:
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
        with committing(form) as done:
            payouts.change_payout_details(
                partner, details, current_user, form.current_password.data, form.code.data
            )
        if done:
            flash(_("Payout details saved."), "success")
            return redirect(url_for("partner.earnings"))
    status = 200 if request.method == "GET" else 422
    return (
        render_template(
            "partner/payout_details.html",
            form=form,
            partner=partner,
            suspended=partner.status == PartnerStatus.SUSPENDED,
        ),
        status,
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
    partner = current_user.partner
    coupon = _first_coupon(partner)
    return render_template(
        "partner/creatives.html",
        partner=partner,
        page=page,
        codes={
            creative.id: creatives.main_code(_code_of(creative, partner, coupon)) for creative in page.items
        },
        filters=filters,
        kinds=list(CreativeKind),
        campaigns=creatives.campaigns_in_use(),
        languages=creatives.languages_in_use(),
    )


def _code_of(creative, partner, coupon: str | None = None) -> creatives.CreativeCode:
    """The creative's code with the partner's link (marked with the creative) inside, and their
    coupon code where the copy has ``{coupon}``."""
    link = url_for("track.follow_link", code=partner.ref_code, creative=creative.id, _external=True)
    image_url = None
    if creative.kind == CreativeKind.BANNER:
        image_url = url_for("media.banner_image", creative_id=creative.id, _external=True)
    return creatives.code_for(creative, link=link, image_url=image_url, coupon=coupon)


def _first_coupon(partner) -> str | None:
    """The partner's first active coupon code: what ``{coupon}`` in copy text becomes."""
    return next(iter(coupons.active_codes_of(partner.id)), None)


@bp.get("/creatives/<int:creative_id>")
@partner_required
def show_creative(creative_id: int):
    creative = creatives.published_creative(creative_id)
    if creative is None:
        abort(404)
    partner = current_user.partner
    return render_template(
        "partner/creative.html",
        partner=partner,
        creative=creative,
        code=_code_of(creative, partner, _first_coupon(partner)),
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


# --- rewards and custom campaign requests ------------------------------------------------------


def _rewards_context(partner) -> dict:
    program = get_program()
    return {
        "partner": partner,
        "program": program,
        "overview": rewards_overview(partner, program),
        "requests": campaign_requests.partner_requests(partner),
        "badge_parts": campaign_requests.badge_parts,
        "desired_rate": campaign_requests.desired_rate,
        "offered_rate": campaign_requests.offered_rate,
        "request_link": campaign_requests.request_link,
        "can_request": campaign_requests.can_request(partner, program),
        "confirm_form": ConfirmForm(formdata=None),
    }


def _rewards_page(form: CampaignRequestForm, status: int = 200):
    context = _rewards_context(current_user.partner)
    body = render_page_or_partial(
        "partner/rewards.html", "partner/_partials/_rewards_live.html", form=form, **context
    )
    return body, status


@bp.get("/rewards")
@partner_required
def rewards():
    return _rewards_page(CampaignRequestForm(formdata=None))


@bp.post("/rewards/requests")
@partner_required
def request_campaign():
    form = CampaignRequestForm()
    if form.validate_on_submit():
        data = campaign_requests.RequestInput(
            name=form.name.data,
            landing_url=form.landing_url.data,
            desired_percent_bp=form.desired_rate.data_bp,
            expected_monthly_conversions=form.expected_monthly_conversions.data,
            note=form.note.data,
        )
        with committing(form, write=True) as done:
            request_ = campaign_requests.submit_request(current_user.partner, get_program(), data)
        if done:
            flash(_("Request sent. The team will answer in your inbox and here."), "success")
            return redirect(url_for("partner.show_campaign_request", request_id=request_.id))
    return _rewards_page(form, 422)


def _own_request(request_id: int):
    found = campaign_requests.partner_request(current_user.partner, request_id)
    if found is None:
        abort(404)
    return found


def _request_page(found, decline_form: DeclineOfferForm, status: int = 200):
    body = render_page_or_partial(
        "partner/campaign_request.html",
        "partner/_partials/_campaign_request.html",
        **campaign_request_context(found, get_program(), "partner.show_campaign_request"),
        campaign=found.campaign,
        sales=campaign_requests.campaign_sales(found),
        confirm_form=ConfirmForm(formdata=None),
        decline_form=decline_form,
    )
    return body, status


@bp.get("/rewards/requests/<int:request_id>")
@partner_required
def show_campaign_request(request_id: int):
    # Live re-fetches only read: two fragments refreshing at once must not race to write
    # (SQLite). Opening the page marks the conversation read, as the inbox does.
    if request.htmx:
        found = _own_request(request_id)
        if request.args.get("part") == "messages":
            return render_template(
                "_partials/_thread_messages.html",
                **thread_context(
                    found.thread,
                    url_for("partner.show_campaign_request", request_id=found.id, part="messages"),
                ),
            )
        return _request_page(found, DeclineOfferForm(formdata=None))
    with committing(write=True):
        found = _own_request(request_id)
        if found.thread is not None:
            inbox.mark_read_by_partner(found.thread)
    return _request_page(found, DeclineOfferForm(formdata=None))


@bp.post("/rewards/requests/<int:request_id>/<any(accept, decline, withdraw):action>")
@partner_required
def answer_campaign_request(request_id: int, action: str):
    found = _own_request(request_id)
    form = DeclineOfferForm() if action == "decline" else ConfirmForm()
    if not form.validate_on_submit():
        return _request_page(found, form if action == "decline" else DeclineOfferForm(formdata=None), 422)
    with committing(write=True) as done:
        if action == "accept":
            campaign_requests.accept_offer(found, current_user, get_program())
        elif action == "decline":
            campaign_requests.decline_offer(found, current_user, get_program(), form.note.data)
        else:
            campaign_requests.withdraw_request(found, current_user)
    if not done:
        db.session.refresh(found)
        return _request_page(found, DeclineOfferForm(formdata=None), 409)
    flash(
        {
            "accept": _("Offer accepted. Your campaign link is ready."),
            "decline": _("Offer declined. The team has been told."),
            "withdraw": _("Request withdrawn."),
        }[action],
        "success",
    )
    return redirect(url_for("partner.show_campaign_request", request_id=found.id))

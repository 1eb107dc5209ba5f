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
from portal.services import (
    accounts,
    announcements,
    dashboards,
    inbox,
    links,
    partner_figures,
    partners,
    payouts,
)
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


def _today_and_zone() -> tuple:
    from portal.models.types import utcnow
    from portal.services import schedule
    from portal.services.program import get_program

    program = get_program()
    return program, schedule.local_today(program, utcnow())


def _applications_context() -> dict:
    program, today = _today_and_zone()
    page = db.paginate(partners.partner_query(PartnerStatus.APPLIED), per_page=25, error_out=False)
    return {
        "listing": page,
        "waiting": {
            p.id: partner_figures.waiting_days(p.applied_at, today, program.timezone) for p in page.items
        },
        "confirm_form": ConfirmForm(formdata=None),
    }


@bp.get("/applications")
@operator_required
def applications():
    return render_page_or_partial(
        "admin/applications.html", "admin/_partials/_applications.html", **_applications_context()
    )


@bp.post("/applications/<int:partner_id>/approve")
@operator_required
def approve_application(partner_id: int):
    """Approve an application from the list; back to the list (htmx: the list alone)."""
    partner = db.get_or_404(Partner, partner_id)
    form = ConfirmForm()
    if form.validate_on_submit():
        with committing() as done:
            accounts.approve_partner(partner, current_user)
        if done:
            flash(_("%(name)s is approved.") % {"name": partner.user.name}, "success")
    else:
        flash(_("Nothing changed: the form had expired. Try again."), "error")
    if request.htmx:
        return render_template("admin/_partials/_applications.html", **_applications_context())
    return redirect(url_for("admin.applications"))


_LIST_RANGES = ("7d", "30d", "90d", "this_month", "last_month")


def _partner_filters() -> partner_figures.PartnerFilters:
    args = request.args
    status = args.get("status") or None
    if status not in (None, *PartnerStatus):
        status = None
    tier = (args.get("tier") or "").strip() or None
    if tier is not None and tier != "none" and not tier.isdigit():
        tier = None
    activity = args.get("activity") or None
    if activity not in partner_figures.ACTIVITY_FILTERS:
        activity = None
    sort = args.get("sort") or partner_figures.DEFAULT_SORT
    if sort not in partner_figures.SORTS:
        sort = partner_figures.DEFAULT_SORT
    # Figures sort largest first, names A to Z, applications newest first (the queue: oldest).
    default_dir = (
        "asc" if sort == "name" or (sort == "applied" and status == PartnerStatus.APPLIED) else "desc"
    )
    direction = args.get("dir") if args.get("dir") in ("asc", "desc") else default_dir
    return partner_figures.PartnerFilters(
        status=status,
        search=(args.get("q") or "").strip()[:100],
        tag=(args.get("tag") or "").strip()[:40] or None,
        tier=tier,
        risk=args.get("risk") == "1",
        activity=activity,
        owed=args.get("owed") == "1",
        sort=sort,
        descending=direction == "desc",
    )


@bp.get("/partners")
@operator_required
def list_partners():
    program, today = _today_and_zone()
    filters = _partner_filters()
    preset = request.args.get("range") if request.args.get("range") in _LIST_RANGES else "30d"
    rng = dashboards.date_range(preset, today)
    with committing():  # keeps the partner trends it recounted (a cache)
        trends = dashboards.partner_trends(today, program.timezone)
    risk = {t.partner.id: t.reasons for t in trends.all if t.reasons}
    query = partner_figures.list_query(filters, rng, today, set(risk))
    page = db.paginate(query, per_page=partner_figures.PER_PAGE, error_out=False)
    args = {
        "status": filters.status,
        "q": filters.search or None,
        "tag": filters.tag,
        "tier": filters.tier,
        "risk": "1" if filters.risk else None,
        "activity": filters.activity,
        "owed": "1" if filters.owed else None,
        "range": preset if preset != "30d" else None,
    }
    return render_page_or_partial(
        "admin/partners.html",
        "admin/_partials/_partner_list.html",
        listing=page,
        filters=filters,
        args={key: value for key, value in args.items() if value},
        figures=partner_figures.figures_for([p.id for p in page.items], rng, risk),
        rng=rng,
        ranges=_LIST_RANGES,
        range_label=dashboards.range_label,
        program=program,
        tags=partners.all_tags(),
        tiers=partner_figures.all_tiers(),
        counts=partners.count_by_status(),
    )


def _partner_figures(partner: Partner) -> dict:
    """The partner's figures of the last 30 days, balances, last payout, activity, tier and risk."""
    program, today = _today_and_zone()
    rng = dashboards.date_range("30d", today)
    with committing():  # keeps the partner trends it recounted (a cache)
        trends = dashboards.partner_trends(today, program.timezone)
    risk = {t.partner.id: t.reasons for t in trends.all if t.partner.id == partner.id}
    return {
        "program": program,
        "figures_range": rng,
        "figures": partner_figures.figures_for([partner.id], rng, risk)[partner.id],
        "earnings": payouts.earnings_of(partner.id),
    }


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
        **_partner_figures(partner),
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

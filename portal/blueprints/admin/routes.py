"""Operator console: dashboard, partners, conversions, inbox, announcements, payouts, settings, team."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Response, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from portal.blueprints.admin import bp
from portal.blueprints.admin.forms import (
    CREATIVE_FORMS,
    AnnouncementForm,
    ApiKeyForm,
    BulkBannerForm,
    ConfirmForm,
    ConversionRejectForm,
    FailureForm,
    ManagerForm,
    NewMessageForm,
    PaymentForm,
    RejectForm,
    ReplaceFileForm,
    SettingsForm,
    SlugForm,
    SuspendForm,
    TagsForm,
    TeamMemberForm,
    TemplateForm,
    ThreadReplyForm,
)
from portal.database import begin_write
from portal.errors import DomainError
from portal.extensions import db
from portal.forms import put_error_on_form
from portal.mail import MailError
from portal.models import (
    OPERATOR_ROLES,
    Announcement,
    ApiKey,
    AutomaticKind,
    Conversion,
    ConversionStatus,
    Creative,
    CreativeKind,
    CreativeStatus,
    Link,
    Partner,
    PartnerStatus,
    PayoutBatch,
    PayoutItem,
    Role,
    Tag,
    Tier,
    User,
)
from portal.models.types import utcnow
from portal.security import admin_required, operator_required
from portal.services import (
    accounts,
    announcements,
    api_keys,
    campaign_requests,
    creative_stats,
    creatives,
    dashboards,
    inbox,
    lifecycle,
    links,
    partners,
    payouts,
    reports,
    schedule,
    tracking,
)
from portal.services.audit import record_event
from portal.services.commissions import commission_summary
from portal.services.creative_files import Upload, format_size
from portal.services.program import get_program, update_program_settings
from portal.services.tracking import reason_label
from portal.views import accepts_uploads, dashboard_range, day_arg, render_page_or_partial


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


def _get_partner(partner_id: int) -> Partner:
    partner = db.session.get(Partner, partner_id)
    if partner is None:
        abort(404)
    return partner


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


@bp.post("/partners/<int:partner_id>/access/<any(activate, deactivate):action>")
@admin_required
def set_partner_access(partner_id: int, action: str):
    """Switch a partner's sign-in off (every session of theirs ends) or back on."""
    partner = _get_partner(partner_id)
    if ConfirmForm().validate_on_submit():
        try:
            accounts.set_user_active(current_user, partner.user, action == "activate")
        except DomainError as error:
            db.session.rollback()
            flash(error.message, "error")
        else:
            db.session.commit()
            flash(_("Access updated for %(name)s.", name=partner.user.name), "success")
    return redirect(url_for("admin.show_partner", partner_id=partner.id))


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


# --- inbox ----------------------------------------------------------------------------------


@bp.get("/inbox")
@operator_required
def list_threads():
    mine = request.args.get("mine") == "1"
    return render_page_or_partial(
        "admin/inbox.html",
        "admin/_partials/_inbox_list.html",
        rows=inbox.operator_threads(current_user, mine_only=mine),
        mine=mine,
    )


@bp.get("/inbox/unread")
@operator_required
def unread_badge():
    return render_template("_partials/_unread_badge.html", unread=inbox.team_unread_count())


def _get_thread(thread_id: int):
    thread = inbox.get_thread(thread_id)
    if thread is None:
        abort(404)
    return thread


def _thread_page(thread, form: ThreadReplyForm, status: int = 200):
    if inbox.mark_read_by_team(thread):
        db.session.commit()
    body = render_page_or_partial(
        "admin/thread.html",
        "_partials/_thread_messages.html",
        thread=thread,
        campaign_request=campaign_requests.request_of_thread(thread.id),
        messages=inbox.thread_messages(thread),
        refresh_url=url_for("admin.show_thread", thread_id=thread.id),
        form=form,
    )
    return body, status


@bp.get("/inbox/<int:thread_id>")
@operator_required
def show_thread(thread_id: int):
    return _thread_page(_get_thread(thread_id), ThreadReplyForm(formdata=None))


@bp.post("/inbox/<int:thread_id>")
@operator_required
def reply_thread(thread_id: int):
    thread = _get_thread(thread_id)
    form = ThreadReplyForm()
    if form.validate_on_submit():
        try:
            inbox.reply(thread, current_user, form.body.data)
        except DomainError as error:
            db.session.rollback()
            put_error_on_form(form, error)
        else:
            db.session.commit()
            flash(_("Answer sent to %(name)s.", name=thread.partner.user.name), "success")
            return redirect(url_for("admin.show_thread", thread_id=thread.id, _anchor="reply"))
    return _thread_page(thread, form, 422)


@bp.post("/partners/<int:partner_id>/messages")
@operator_required
def start_thread(partner_id: int):
    partner = _get_partner(partner_id)
    form = NewMessageForm()
    sent = _send_first_message(partner, form)
    if sent is not None:
        return sent
    return _render_partner(partner, status=422, message_form=form)


def _send_first_message(partner: Partner, form: NewMessageForm):
    """Start a thread from a submitted form: the redirect to it, or None (errors on the form)."""
    if form.validate_on_submit():
        try:
            thread = inbox.start_thread(partner, current_user, form.subject.data, form.body.data)
        except DomainError as error:
            db.session.rollback()
            put_error_on_form(form, error)
        else:
            db.session.commit()
            flash(_("Message sent to %(name)s.", name=partner.user.name), "success")
            return redirect(url_for("admin.show_thread", thread_id=thread.id))
    return None


@bp.route("/inbox/new/<int:partner_id>", methods=["GET", "POST"])
@operator_required
def new_thread(partner_id: int):
    """A new conversation with one partner (the dashboard's "Message" on a partner at risk)."""
    partner = _get_partner(partner_id)
    if request.method == "GET":
        subject = (request.args.get("subject") or "")[:200]
        form = NewMessageForm(formdata=None, subject=subject)
        return render_template("admin/new_thread.html", partner=partner, form=form)
    form = NewMessageForm()
    sent = _send_first_message(partner, form)
    if sent is not None:
        return sent
    return render_template("admin/new_thread.html", partner=partner, form=form), 422


@bp.post("/partners/<int:partner_id>/tags")
@operator_required
def set_partner_tags(partner_id: int):
    partner = _get_partner(partner_id)
    form = TagsForm()
    if form.validate_on_submit():
        try:
            partners.set_partner_tags(partner, current_user, announcements.split_list(form.tags.data))
        except DomainError as error:
            db.session.rollback()
            put_error_on_form(form, error)
        else:
            db.session.commit()
            flash(_("Tags saved."), "success")
            return redirect(url_for("admin.show_partner", partner_id=partner.id))
    return _render_partner(partner, status=422, tags_form=form)


@bp.post("/partners/<int:partner_id>/manager")
@operator_required
def assign_manager(partner_id: int):
    partner = _get_partner(partner_id)
    form = ManagerForm(operators=partners.operators())
    if form.validate_on_submit():
        manager = db.session.get(User, form.manager.data) if form.manager.data else None
        try:
            partners.assign_manager(partner, current_user, manager)
        except DomainError as error:
            db.session.rollback()
            flash(error.message, "error")
        else:
            db.session.commit()
            flash(_("Manager saved."), "success")
    else:
        flash(_("Choose a manager from the list."), "error")
    return redirect(url_for("admin.show_partner", partner_id=partner.id))


# --- announcements ----------------------------------------------------------------------------


@bp.get("/announcements")
@operator_required
def list_announcements():
    page = db.paginate(announcements.announcement_query(), per_page=25, error_out=False)
    return render_page_or_partial(
        "admin/announcements.html",
        "admin/_partials/_announcement_table.html",
        listing=page,
        stats=announcements.read_stats([a.id for a in page.items]),
        describe=announcements.describe_audience,
    )


def _announcement_draft(form: AnnouncementForm) -> announcements.AnnouncementDraft:
    return announcements.AnnouncementDraft(
        title=form.title.data,
        body=form.body.data,
        audience_kind=form.audience_kind.data,
        audience_items=form.audience_items(),
        pinned=form.pinned.data,
        when=form.when.data,
        publish_at=form.publish_at_utc(),
    )


def _save_announcement(form: AnnouncementForm, announcement: Announcement | None):
    if not form.validate_on_submit():
        return None
    try:
        saved = announcements.save_announcement(current_user, _announcement_draft(form), announcement)
    except DomainError as error:
        db.session.rollback()
        put_error_on_form(form, error)
        return None
    db.session.commit()
    flash(
        {
            "published": _("Announcement published."),
            "scheduled": _("Announcement scheduled."),
            "draft": _("Draft saved."),
        }[saved.state],
        "success",
    )
    return redirect(url_for("admin.edit_announcement", announcement_id=saved.id))


@bp.route("/announcements/new", methods=["GET", "POST"])
@operator_required
def new_announcement():
    form = AnnouncementForm()
    done = _save_announcement(form, None)
    if done is not None:
        return done
    status = 200 if request.method == "GET" else 422
    return render_template(
        "admin/announcement_form.html", form=form, announcement=None, tags=partners.all_tags()
    ), status


def _get_announcement(announcement_id: int) -> Announcement:
    announcement = db.session.get(Announcement, announcement_id)
    if announcement is None:
        abort(404)
    return announcement


def _form_for(announcement: Announcement) -> AnnouncementForm:
    columns = {
        "tags": (Tag.id, Tag.name),
        "partners": (Partner.id, Partner.ref_code),
        "tiers": (Tier.id, Tier.name),
    }
    items = []
    if announcement.audience_kind in columns:
        key, name = columns[announcement.audience_kind]
        names = dict(
            db.session.execute(sa.select(key, name).where(key.in_(announcement.audience_keys))).all()
        )
        # In the stored order, so that saving the form untouched stores the same list.
        items = [names[k] for k in announcement.audience_keys if k in names]
    form = AnnouncementForm(
        formdata=None,
        title=announcement.title,
        body=announcement.body,
        audience_kind=announcement.audience_kind,
        tags=", ".join(items) if announcement.audience_kind == "tags" else "",
        partners=", ".join(items) if announcement.audience_kind == "partners" else "",
        tiers=", ".join(items) if announcement.audience_kind == "tiers" else "",
        pinned=announcement.pinned,
        when="schedule" if announcement.publish_at else "draft",
    )
    if announcement.publish_at:
        from zoneinfo import ZoneInfo

        from flask_babel import get_timezone

        form.publish_at.data = announcement.publish_at.astimezone(ZoneInfo(str(get_timezone()))).replace(
            tzinfo=None
        )
    return form


@bp.route("/announcements/<int:announcement_id>", methods=["GET", "POST"])
@operator_required
def edit_announcement(announcement_id: int):
    announcement = _get_announcement(announcement_id)
    if announcement.published_at is not None:
        if request.method == "POST":
            abort(409)
        stats = announcements.read_stats([announcement.id])[announcement.id]
        return render_page_or_partial(
            "admin/announcement.html",
            "admin/_partials/_announcement_stats.html",
            announcement=announcement,
            stats=stats,
            audience=announcements.describe_audience(announcement),
            confirm_form=ConfirmForm(formdata=None),
        )
    form = AnnouncementForm() if request.method == "POST" else _form_for(announcement)
    done = _save_announcement(form, announcement) if request.method == "POST" else None
    if done is not None:
        return done
    status = 200 if request.method == "GET" else 422
    return render_template(
        "admin/announcement_form.html", form=form, announcement=announcement, tags=partners.all_tags()
    ), status


@bp.post("/announcements/<int:announcement_id>/<any(pin, unpin):action>")
@operator_required
def pin_announcement(announcement_id: int, action: str):
    announcement = _get_announcement(announcement_id)
    if ConfirmForm().validate_on_submit():
        announcements.set_pinned(announcement, current_user, action == "pin")
        db.session.commit()
        flash(_("Pinned.") if announcement.pinned else _("Unpinned."), "success")
    return redirect(url_for("admin.edit_announcement", announcement_id=announcement.id))


# --- automatic messages ---------------------------------------------------------------------


@bp.get("/automatic-messages")
@operator_required
def list_templates():
    templates = lifecycle.all_templates()
    db.session.commit()  # the built-in wording is saved on first view
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
    template = lifecycle.get_template(kind)
    form = TemplateForm(obj=template) if request.method == "GET" else TemplateForm()
    if form.validate_on_submit():
        change = lifecycle.TemplateChange(
            enabled=form.enabled.data,
            subject=form.subject.data,
            body=form.body.data,
            quiet_days=form.quiet_days.data,
        )
        try:
            lifecycle.save_template(kind, current_user, change)
        except DomainError as error:
            db.session.rollback()
            put_error_on_form(form, error)
        else:
            db.session.commit()
            flash(_("“%(name)s” saved.", name=lifecycle.kind_label(kind)), "success")
            return redirect(url_for("admin.edit_template", kind=kind))
    elif request.method == "GET":
        db.session.commit()  # the built-in wording is saved on first view
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
        lifecycle.reset_template(kind, current_user)
        db.session.commit()
        flash(_("The built-in wording is back."), "success")
    return redirect(url_for("admin.edit_template", kind=kind))


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
        summaries=payouts.batch_summaries([batch.id for batch in page.items]),
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


BATCH_ITEMS_PER_PAGE = 100


def _batch_page(
    batch: PayoutBatch, payment_form=None, failure_form=None, failed_item=None, status: int = 200
):
    """The batch page. ``failed_item`` is ``(item_id, action, form)`` when one payment's own form
    was refused: its errors and typed values go back into that row only, never into the
    batch-wide form (which would then offer one partner's reference for everybody)."""
    # A batch has one item per partner (10,000 and more): the table pages, the figures above
    # it are over the whole batch.
    items = db.paginate(
        payouts.batch_items_query(batch),
        per_page=BATCH_ITEMS_PER_PAGE,
        max_per_page=BATCH_ITEMS_PER_PAGE,
        error_out=False,
    )
    # The payment date the operator most likely means: today where the program keeps its books.
    today = schedule.local_today(get_program(), utcnow())
    return (
        render_template(
            "admin/payout_batch.html",
            batch=batch,
            items=items,
            summary=payouts.batch_summary(batch),
            confirm_form=ConfirmForm(formdata=None),
            payment_form=payment_form or PaymentForm(formdata=None, paid_on=today),
            failure_form=failure_form or FailureForm(formdata=None),
            failed_item=failed_item,
            today=today,
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
    forms = {"payment_form": form} if item is None else {"failed_item": (item.id, action, form)}
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


@bp.post("/payouts/<int:batch_id>/items/<int:item_id>/release")
@operator_required
def release_item(batch_id: int, item_id: int):
    """Release an item held because the partner's payout details changed (batch in review)."""
    batch = _get_batch(batch_id)
    item = db.session.get(PayoutItem, item_id)
    if item is None or item.batch_id != batch.id:
        abort(404)
    if ConfirmForm().validate_on_submit():
        try:
            payouts.release_details_hold(item, current_user, get_program())
        except DomainError as error:
            db.session.rollback()
            flash(error.message, "error")
        else:
            db.session.commit()
            flash(_("Released: this batch pays it, to the partner's new payout details."), "success")
    return redirect(url_for("admin.show_batch", batch_id=batch.id))


@bp.post("/payouts/<int:batch_id>/paid")
@operator_required
def mark_batch_paid(batch_id: int):
    return _payment_action(batch_id, None, "paid")


@bp.post("/payouts/<int:batch_id>/items/<int:item_id>/<any(paid, failed):action>")
@operator_required
def mark_item(batch_id: int, item_id: int, action: str):
    return _payment_action(batch_id, item_id, action)


# --- creatives ----------------------------------------------------------------------


def _creative(creative_id: int) -> Creative:
    creative = creatives.creative_with_history(creative_id)
    if creative is None:
        abort(404)
    return creative


def _upload(file_storage) -> Upload | None:
    if not file_storage:
        return None
    return Upload.from_stream(
        file_storage.filename, file_storage.stream, current_app.config["CREATIVE_MAX_BYTES"]
    )


def _creative_input(form) -> creatives.CreativeInput:
    def value(name):
        field = getattr(form, name, None)
        return field.data if field is not None else None

    return creatives.CreativeInput(
        name=form.name.data or "",
        channels=form.channels.data or [],
        language=form.language.data or "",
        description=value("description"),
        campaign=value("campaign"),
        headline=value("headline"),
        subject=value("subject"),
        body=value("body"),
        call_to_action=value("call_to_action"),
        url=value("url"),
        note=value("note"),
    )


def _upload_limits() -> dict:
    config = current_app.config
    return {
        "max_size": format_size(config["CREATIVE_MAX_BYTES"]),
        "max_bytes": config["CREATIVE_MAX_BYTES"],
        "max_files": config["CREATIVE_BULK_MAX_FILES"],
    }


@bp.get("/creatives")
@operator_required
def list_creatives():
    filters = {
        "status": request.args.get("status") if request.args.get("status") in set(CreativeStatus) else None,
        "kind": request.args.get("kind") if request.args.get("kind") in set(CreativeKind) else None,
        "channel": request.args.get("channel") or None,
        "search": (request.args.get("q") or "").strip()[:100] or None,
    }
    page = db.paginate(creatives.creative_query(**filters), per_page=25, error_out=False)
    return render_template("admin/creatives.html", page=page, filters=filters, kinds=list(CreativeKind))


@bp.route("/creatives/new/<any(banner, text, landing, email, video):kind>", methods=["GET", "POST"])
@operator_required
@accepts_uploads
def create_creative(kind: str):
    form = CREATIVE_FORMS[kind][0]()
    if form.validate_on_submit():
        try:
            creative = creatives.create_creative(
                kind,
                current_user,
                get_program(),
                _creative_input(form),
                _upload(form.file.data) if hasattr(form, "file") else None,
            )
        except DomainError as error:
            db.session.rollback()
            put_error_on_form(form, error)
        else:
            db.session.commit()
            flash(
                _("“%(name)s” is saved as a draft. Publish it when it is ready.", name=creative.name),
                "success",
            )
            return redirect(url_for("admin.edit_creative", creative_id=creative.id))
    status = 200 if request.method == "GET" else 422
    return render_template("admin/creative_new.html", form=form, kind=kind, **_upload_limits()), status


def _edit_form(creative: Creative, formdata: bool = False):
    form_class = CREATIVE_FORMS[creative.kind][1]
    if formdata:
        return form_class()
    version = creative.current
    return form_class(
        formdata=None,
        data={
            "name": creative.name,
            "channels": creative.channels,
            "campaign": creative.campaign,
            "language": creative.language,
            "description": creative.description,
            "headline": version.headline,
            "subject": version.subject,
            "body": version.body,
            "call_to_action": version.call_to_action,
            "url": version.url,
        },
    )


def _creative_page(creative: Creative, form=None, replace_form=None, status: int = 200):
    return (
        render_template(
            "admin/creative_edit.html",
            creative=creative,
            form=form or _edit_form(creative),
            replace_form=replace_form or ReplaceFileForm(formdata=None),
            confirm_form=ConfirmForm(formdata=None),
            file_kinds=creatives.FILE_KINDS,
            **_upload_limits(),
        ),
        status,
    )


@bp.route("/creatives/<int:creative_id>", methods=["GET", "POST"])
@operator_required
def edit_creative(creative_id: int):
    creative = _creative(creative_id)
    if request.method == "GET":
        return _creative_page(creative)
    form = _edit_form(creative, formdata=True)
    if form.validate_on_submit():
        try:
            creatives.update_creative(creative, current_user, get_program(), _creative_input(form))
        except DomainError as error:
            db.session.rollback()
            put_error_on_form(form, error)
        else:
            db.session.commit()
            flash(_("Changes to “%(name)s” saved.", name=creative.name), "success")
            return redirect(url_for("admin.edit_creative", creative_id=creative.id))
    return _creative_page(_creative(creative_id), form=form, status=422)


@bp.post("/creatives/<int:creative_id>/replace")
@operator_required
@accepts_uploads
def replace_creative_file(creative_id: int):
    creative = _creative(creative_id)
    form = ReplaceFileForm()
    if form.validate_on_submit():
        try:
            creatives.replace_file(creative, current_user, _upload(form.file.data), form.note.data)
        except DomainError as error:
            db.session.rollback()
            put_error_on_form(form, error)
        else:
            db.session.commit()
            flash(
                _(
                    "New image saved as version %(n)d; partners get it from now on.",
                    n=creative.current_version,
                ),
                "success",
            )
            return redirect(url_for("admin.edit_creative", creative_id=creative.id))
    return _creative_page(_creative(creative_id), replace_form=form, status=422)


@bp.post("/creatives/<int:creative_id>/<any(publish, archive):action>")
@operator_required
def set_creative_status(creative_id: int, action: str):
    creative = _creative(creative_id)
    if ConfirmForm().validate_on_submit():
        try:
            creatives.set_creative_status(creative, current_user, action)
        except DomainError as error:
            db.session.rollback()
            flash(error.message, "error")
        else:
            db.session.commit()
            if action == "publish":
                flash(_("“%(name)s” is published: partners see it now.", name=creative.name), "success")
            else:
                flash(_("“%(name)s” is archived: partners no longer see it.", name=creative.name), "success")
    return redirect(url_for("admin.edit_creative", creative_id=creative_id))


@bp.route("/creatives/bulk", methods=["GET", "POST"])
@operator_required
@accepts_uploads
def bulk_upload_banners():
    form = BulkBannerForm()
    results = None
    status = 200
    if form.validate_on_submit():
        try:
            results = creatives.bulk_upload_banners(
                current_user,
                get_program(),
                [_upload(f) for f in form.files.data],
                creatives.CreativeInput(
                    name="",
                    channels=form.channels.data or [],
                    language=form.language.data or "",
                    campaign=form.campaign.data,
                ),
            )
        except DomainError as error:
            db.session.rollback()
            put_error_on_form(form, error)
            status = 422
        else:
            db.session.commit()
            if not any(r.creative for r in results):
                status = 422
    elif request.method == "POST":
        status = 422
    body = render_page_or_partial(
        "admin/creatives_bulk.html",
        "admin/_partials/_bulk_results.html",
        form=form,
        results=results,
        **_upload_limits(),
    )
    return body, status


@bp.get("/creatives/stats")
@operator_required
def show_creative_stats():
    period = creative_stats.period(day_arg("from"), day_arg("to"), get_program().timezone)
    sort = request.args.get("sort") if request.args.get("sort") in creative_stats.SORT_KEYS else "clicks"
    descending = request.args.get("dir", "desc") != "asc"
    report = creative_stats.creative_report(period, sort=sort, descending=descending)
    return render_template(
        "admin/creative_stats.html",
        report=report,
        period=period,
        sort=sort,
        descending=descending,
        program=get_program(),
    )

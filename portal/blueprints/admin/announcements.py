"""Operator console: announcements (drafts, schedule, publish, pin, read figures)."""

from __future__ import annotations

import sqlalchemy as sa
from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import BooleanField, DateTimeLocalField, RadioField, StringField
from wtforms.validators import DataRequired, Length, Optional

from portal.blueprints.admin import bp
from portal.blueprints.admin.inbox import _markdown_help
from portal.extensions import db
from portal.forms import ConfirmForm, TextAreaField, as_choices, at_most
from portal.models import Announcement, Partner, Tag, Tier
from portal.security import operator_required
from portal.services import announcements, partners
from portal.views import committing, render_page_or_partial


class AnnouncementForm(FlaskForm):
    title = StringField(
        _l("Title"),
        validators=[DataRequired(_l("Give the announcement a title.")), at_most(200)],
    )
    body = TextAreaField(
        _l("Announcement"),
        validators=[DataRequired(_l("Write the announcement.")), at_most(20_000)],
        description=_markdown_help,
    )
    audience_kind = RadioField(_l("Who gets it"), default="all")
    tags = StringField(
        _l("Tags (for “Partners with a tag”)"),
        validators=[Optional(), Length(max=1000)],
        description=_l("Separated by commas; partners with any of them get it."),
    )
    partners = TextAreaField(
        _l("Partners (for “Named partners”)"),
        validators=[Optional(), Length(max=5000)],
        description=_l("Partner codes or e-mails, separated by commas or one per line."),
    )
    tiers = StringField(
        _l("Tiers (for “Partners in a tier”)"),
        validators=[Optional(), Length(max=1000)],
        description=_l("Tier names separated by commas; partners in any of them get it."),
    )
    pinned = BooleanField(_l("Pin it at the top of partners' dashboards"))
    when = RadioField(
        _l("When"),
        default="now",
        choices=as_choices(
            [("now", _l("Publish now")), ("schedule", _l("At a set time")), ("draft", _l("Keep as a draft"))]
        ),
    )
    publish_at = DateTimeLocalField(
        _l("Publish at"),
        format=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"],
        validators=[Optional()],
        description=_l("In your time zone (%(zone)s)."),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from flask_babel import get_timezone

        from portal.services.announcements import AUDIENCES

        self.audience_kind.choices = as_choices((kind, a.label) for kind, a in AUDIENCES.items())
        self.publish_at.description = _l("In your time zone (%(zone)s).", zone=str(get_timezone()))

    def audience_items(self) -> list[str]:
        from portal.services.announcements import split_list

        if self.audience_kind.data == "tags":
            return split_list(self.tags.data)
        if self.audience_kind.data == "partners":
            return split_list(self.partners.data)
        if self.audience_kind.data == "tiers":
            return split_list(self.tiers.data)
        return []

    def publish_at_utc(self):
        """The entered local time as an aware UTC datetime (None if empty)."""
        from datetime import UTC
        from zoneinfo import ZoneInfo

        from flask_babel import get_timezone

        value = self.publish_at.data
        if value is None:
            return None
        # Babel hands out pytz zones; zoneinfo applies the right offset with replace().
        return value.replace(tzinfo=ZoneInfo(str(get_timezone()))).astimezone(UTC)


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
    with committing(form) as done:
        saved = announcements.save_announcement(current_user, _announcement_draft(form), announcement)
    if not done:
        return None
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
    announcement = db.get_or_404(Announcement, announcement_id)
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
    announcement = db.get_or_404(Announcement, announcement_id)
    if ConfirmForm().validate_on_submit():
        with committing() as done:
            announcements.set_pinned(announcement, current_user, action == "pin")
        if done:
            flash(_("Pinned.") if announcement.pinned else _("Unpinned."), "success")
    return redirect(url_for("admin.edit_announcement", announcement_id=announcement.id))

"""Operator console: the creative library (create, edit, replace the file, publish, bulk banners, stats)."""

from __future__ import annotations

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired, MultipleFileField
from wtforms import SelectField, StringField
from wtforms.validators import DataRequired, Optional

from portal.blueprints.admin import bp
from portal.extensions import db
from portal.forms import (
    ConfirmForm,
    MultiCheckboxField,
    TextAreaField,
    at_most,
    channel_choices,
    language_choices,
)
from portal.models import Creative, CreativeKind, CreativeStatus
from portal.security import operator_required
from portal.services import creative_stats, creatives
from portal.services.creative_files import Upload, format_size
from portal.services.program import get_program
from portal.views import accepts_uploads, committing, day_arg, render_page_or_partial

_at_most = lambda n: at_most(n)  # noqa: E731


_LINK_HELP = _l(
    "Write {link} where the partner's own tracking link should go, and {coupon} for their coupon code."
)


class CreativeForm(FlaskForm):
    """What every kind of creative has."""

    name = StringField(
        _l("Name"),
        validators=[DataRequired(_l("Name the creative.")), at_most(120)],
        description=_l("Partners see it; it is also the banner's alt text."),
    )
    channels = MultiCheckboxField(
        _l("Channels"),
        choices=channel_choices(),
        validators=[DataRequired(_l("Choose at least one channel."))],
    )
    campaign = StringField(
        _l("Campaign (optional)"),
        validators=[Optional(), at_most(64)],
        description=_l("A short tag partners can filter by, e.g. summer-sale."),
    )
    language = SelectField(_l("Language"), default="en")
    description = TextAreaField(
        _l("Description (optional)"),
        validators=[Optional(), at_most(2000)],
        description=_l("When and where to use it; shown to partners."),
    )
    note = StringField(
        _l("Change note (optional)"),
        validators=[Optional(), at_most(200)],
        description=_l("Kept in the version history."),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.language.choices = language_choices()


class BannerForm(CreativeForm):
    pass


class NewBannerForm(BannerForm):
    file = FileField(
        _l("Banner image"),
        validators=[FileRequired(_l("Choose the banner image to upload."))],
        description=_l("PNG, JPEG, GIF or WebP. The type is read from the file itself, not its name."),
    )


class TextCopyForm(CreativeForm):
    headline = StringField(_l("Headline (optional)"), validators=[Optional(), at_most(200)])
    body = TextAreaField(
        _l("Text"),
        validators=[DataRequired(_l("Write the text partners will post.")), at_most(10000)],
        description=_LINK_HELP,
    )
    call_to_action = StringField(
        _l("Call to action (optional)"),
        validators=[Optional(), at_most(200)],
        description=_l("E.g. “Shop the sale: {link}”."),
    )


class LandingPageForm(CreativeForm):
    url = StringField(
        _l("Landing page address"),
        validators=[DataRequired(_l("Enter the page's address.")), at_most(2000)],
        description=_l("A page on one of the program's allowed domains."),
    )


class NewLandingPageForm(LandingPageForm):
    file = FileField(
        _l("Screenshot (optional)"),
        description=_l("PNG, JPEG, GIF or WebP. Partners see it as a preview."),
    )


class EmailTemplateForm(CreativeForm):
    subject = StringField(
        _l("Subject line"), validators=[DataRequired(_l("Write the e-mail's subject line.")), at_most(200)]
    )
    body = TextAreaField(
        _l("E-mail text"),
        validators=[DataRequired(_l("Write the e-mail's text.")), at_most(50000)],
        description=_LINK_HELP,
    )


class VideoLinkForm(CreativeForm):
    url = StringField(
        _l("Video address"),
        validators=[DataRequired(_l("Enter the video's address.")), at_most(2000)],
        description=_l("E.g. the video on YouTube or Vimeo."),
    )


CREATIVE_FORMS = {
    "banner": (NewBannerForm, BannerForm),
    "text": (TextCopyForm, TextCopyForm),
    "landing": (NewLandingPageForm, LandingPageForm),
    "email": (EmailTemplateForm, EmailTemplateForm),
    "video": (VideoLinkForm, VideoLinkForm),
}


class ReplaceFileForm(FlaskForm):
    file = FileField(
        _l("New image"),
        validators=[FileRequired(_l("Choose the new image to upload."))],
        description=_l("PNG, JPEG, GIF or WebP. The current one stays in the version history."),
    )
    note = StringField(_l("Change note (optional)"), validators=[Optional(), at_most(200)])


class BulkBannerForm(FlaskForm):
    files = MultipleFileField(
        _l("Banner images"),
        validators=[FileRequired(_l("Choose one or more images to upload."))],
        description=_l("Several at once; each becomes a draft banner named after its file."),
    )
    channels = CreativeForm.channels
    campaign = CreativeForm.campaign
    language = SelectField(_l("Language"), default="en")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.language.choices = language_choices()


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
        with committing(form) as done:
            creative = creatives.create_creative(
                kind,
                current_user,
                get_program(),
                _creative_input(form),
                _upload(form.file.data) if hasattr(form, "file") else None,
            )
        if done:
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
        with committing(form) as done:
            creatives.update_creative(creative, current_user, get_program(), _creative_input(form))
        if done:
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
        with committing(form) as done:
            creatives.replace_file(creative, current_user, _upload(form.file.data), form.note.data)
        if done:
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
        with committing() as done:
            creatives.set_creative_status(creative, current_user, action)
        if done:
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
        with committing(form) as done:
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
        if not done or not any(r.creative for r in results):
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

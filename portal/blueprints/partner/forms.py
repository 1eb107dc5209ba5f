"""Partner portal forms."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from portal.forms import channel_choices

_max = Length(max=64, message=_l("At most %(max)d characters."))


class LinkForm(FlaskForm):
    label = StringField(
        _l("Name"),
        validators=[DataRequired(_l("Name the link so you can find it later.")), Length(max=120)],
        description=_l("For you only, e.g. “Instagram bio” or “Tent review”."),
    )
    channel = SelectField(_l("Channel"), choices=channel_choices())
    destination_url = StringField(
        _l("Page it opens"),
        validators=[Optional(), Length(max=2000, message=_l("At most %(max)d characters."))],
        description=_l("Leave empty for the shop's home page. Must be a page on the shop's own site."),
    )
    campaign = StringField(_l("Campaign (optional)"), validators=[Optional(), _max])
    sub_id = StringField(
        _l("Sub-ID (optional)"),
        validators=[Optional(), _max],
        description=_l("Your own tag to tell placements apart; you can also add ?sub=… to the link."),
    )


_body_length = Length(max=10_000, message=_l("At most %(max)d characters."))


class ReplyForm(FlaskForm):
    body = TextAreaField(
        _l("Your message"),
        validators=[DataRequired(_l("Write a message first.")), _body_length],
        description=_l("**bold**, *italics*, [links](https://…), lists and `code` work."),
    )


class NewThreadForm(ReplyForm):
    subject = StringField(
        _l("Subject"),
        validators=[
            DataRequired(_l("Give the conversation a subject.")),
            Length(max=200, message=_l("At most %(max)d characters.")),
        ],
    )


def preferences_form(current: dict[str, bool], formdata=None) -> FlaskForm:
    """One switch per kind of e-mail, ticked when it is on."""
    from portal.services.delivery import email_kind_label

    class PreferencesForm(FlaskForm):
        pass

    for kind in current:
        setattr(PreferencesForm, f"email_{kind}", BooleanField(email_kind_label(kind)))
    if formdata is None:
        return PreferencesForm(formdata=None, data={f"email_{k}": v for k, v in current.items()})
    return PreferencesForm()
